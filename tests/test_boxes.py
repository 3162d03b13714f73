"""Property tests for the box ops against independent formulations."""
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmdet.ops.boxes import bbox2distance, box_giou, box_iou, distance2bbox, grid_priors
from rtmdet.ops.nms import SPLIT_THR, batched_nms


def boxes_strategy(n_min=1, n_max=20):
    coord = st.floats(0, 500, allow_nan=False, width=32)
    size = st.floats(0.5, 300, allow_nan=False, width=32)
    box = st.tuples(coord, coord, size, size).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])
    return st.lists(box, min_size=n_min, max_size=n_max).map(lambda b: torch.tensor(b, dtype=torch.float64))


@settings(max_examples=80, deadline=None)
@given(a=boxes_strategy(), b=boxes_strategy())
def test_iou_matches_torchvision_and_is_bounded(a, b):
    iou = box_iou(a, b)
    torch.testing.assert_close(iou, torchvision.ops.box_iou(a, b), atol=1e-9, rtol=1e-9)
    assert bool(((iou >= 0) & (iou <= 1 + 1e-12)).all())
    torch.testing.assert_close(box_iou(b, a), iou.T)
    torch.testing.assert_close(torch.diagonal(box_iou(a, a)), torch.ones(len(a), dtype=a.dtype))


@settings(max_examples=80, deadline=None)
@given(a=boxes_strategy(5, 5), b=boxes_strategy(5, 5))
def test_giou_matches_torchvision_and_bounds(a, b):
    g = box_giou(a, b)
    torch.testing.assert_close(g, torch.diagonal(torchvision.ops.generalized_box_iou(a, b)),
                               atol=1e-9, rtol=1e-9)
    assert bool((g <= box_iou(a, b, aligned=True) + 1e-12).all()) and bool((g >= -1).all())


@settings(max_examples=80, deadline=None)
@given(b=boxes_strategy(), dx=st.floats(-50, 50), dy=st.floats(-50, 50))
def test_distance_coding_round_trips(b, dx, dy):
    centers = torch.stack([(b[:, 0] + b[:, 2]) / 2 + dx * 0, (b[:, 1] + b[:, 3]) / 2], -1)
    pts = centers + torch.tensor([dx, dy], dtype=b.dtype) * 0.01
    torch.testing.assert_close(distance2bbox(pts, bbox2distance(pts, b)), b)


def test_decode_clamps_to_shape():
    pts = torch.tensor([[10.0, 10.0]])
    out = distance2bbox(pts, torch.tensor([[50.0, 5.0, 100.0, 100.0]]), max_shape=(40, 60))
    assert out.tolist() == [[0.0, 5.0, 60.0, 40.0]]


def test_grid_priors_row_major_offset_zero():
    p = grid_priors([(2, 3), (1, 2)], [8, 16], with_stride=True)
    assert p[0].tolist() == [[0, 0, 8, 8], [8, 0, 8, 8], [16, 0, 8, 8],
                             [0, 8, 8, 8], [8, 8, 8, 8], [16, 8, 8, 8]]
    assert p[1][:, :2].tolist() == [[0, 0], [16, 0]]


def _per_class_nms(boxes, scores, labels, thr):
    """Independent reference: NMS class by class, merged by score."""
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().view(-1)
        keep.append(idx[torchvision.ops.nms(boxes[idx], scores[idx], thr)])
    keep = torch.cat(keep)
    return keep[scores[keep].argsort(descending=True)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), thr=st.sampled_from([0.3, 0.5, 0.65]))
def test_batched_nms_equals_per_class_nms(seed, n, thr):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 1], 1)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 5, (n,), generator=g)
    assert batched_nms(boxes, scores, labels, thr).tolist() == _per_class_nms(boxes, scores, labels, thr).tolist()


def test_batched_nms_large_input_uses_per_class_loop():
    g = torch.Generator().manual_seed(0)
    n = SPLIT_THR + 500
    xy = torch.rand(n, 2, generator=g) * 2000
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 1], 1)
    scores, labels = torch.rand(n, generator=g), torch.randint(0, 80, (n,), generator=g)
    keep = batched_nms(boxes, scores, labels, 0.65)
    ref = _per_class_nms(boxes, scores, labels, 0.65)
    assert sorted(keep.tolist()) == sorted(ref.tolist())  # float32 scores tie here: order may differ
    assert bool((scores[keep][:-1] >= scores[keep][1:]).all())
    assert batched_nms(boxes[:0], scores[:0], labels[:0], 0.5).numel() == 0


def test_all_priors_cached_equals_grid_priors():
    from rtmdet.ops.boxes import all_priors
    sizes, strides = [(80, 60), (40, 30), (20, 15)], (8, 16, 32)
    for with_stride in (False, True):
        got = all_priors(sizes, strides, "cpu", with_stride)
        assert torch.equal(got, torch.cat(grid_priors(sizes, strides, torch.float32, "cpu", with_stride)))
        assert all_priors(sizes, strides, "cpu", with_stride) is got  # cached
    # sizes as tensors (a traced export): computed, not cached
    traced = [tuple(torch.tensor(v) for v in hw) for hw in sizes]
    assert torch.equal(all_priors(traced, strides, "cpu"), all_priors(sizes, strides, "cpu"))
    assert all_priors(traced, strides, "cpu") is not all_priors(sizes, strides, "cpu")


def test_decode_launches_few_kernels():
    """All levels decoded at once from cached priors: what a GPU launches per batch (each op a
    kernel; counted on the CPU) stays small - it was 50 with per-level priors and boxes."""
    import rtmdet
    from rtmdet.deploy.bench import OpCounter
    for name, most in (("rtmdet-tiny", 14), ("rtmdet-ins-tiny", 15)):
        m = rtmdet.create(name, num_classes=3).eval()
        with torch.inference_mode():
            out = m(torch.rand(2, 3, 128, 96))
            first = m.decode(out, (128, 96))
            with OpCounter() as c:
                again = m.decode(out, (128, 96))
        assert c.kernels <= most and c.syncs == 0, (name, c.ops)
        assert torch.equal(first["boxes"], again["boxes"])
