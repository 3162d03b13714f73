"""The early-stopping NMS and the batched post-processing against the original algorithm.

The oracle is the original code: `old_batched_nms` (`ops.nms.batched_nms`: class offsets below
SPLIT_THR, one torchvision NMS per class above, merged with an unstable sort) and the per-level
`old_select_topk` + `old_finish`. The new code visits equal scores by ascending index (the
reference with its sorts made stable); where the oracle's unstable sorts meet exact ties the
comparison is with the oracle's stable variant, or as sets plus the score sequence."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

import rtmdet
import rtmdet.ops.nms as nms_mod
import rtmdet.ops.postprocess as pp_mod
from rtmdet import config as rcfg
from rtmdet.ops.boxes import distance2bbox, grid_priors
from rtmdet.ops.nms import SPLIT_THR, batched_nms_topk, batched_nms_topk_padded
from rtmdet.ops.postprocess import postprocess_batch, postprocess_decoded, postprocess_single, select_mask
from helpers import DET_FIX, load_fixture, need


# ---- the oracle: the original algorithm ------------------------------------------------------
def old_batched_nms(boxes, scores, labels, iou_threshold):
    """The original class-aware NMS, kept in `ops.nms.batched_nms` (class offsets below
    SPLIT_THR, read at call time so the tests' monkeypatching reaches it; a torchvision NMS per
    class above, merged with an unstable sort)."""
    return nms_mod.batched_nms(boxes, scores, labels, iou_threshold)


def by_score_then_index(keep, scores):
    """Reorder kept indices by (score desc, index asc): the oracle with a stable final sort."""
    keep = keep.sort()[0]
    return keep[scores[keep].sort(descending=True, stable=True)[1]]


def old_select_topk(scores, score_thr, nms_pre, stable=False):
    valid = scores > score_thr
    vals, idxs = scores[valid], valid.nonzero()
    k = min(nms_pre, idxs.shape[0]) if nms_pre > 0 else idxs.shape[0]
    vals, order = vals.sort(descending=True, stable=stable)
    keep, labels = idxs[order[:k]].unbind(dim=1)
    return vals[:k], keep, labels


def old_postprocess_decoded(boxes_in, scores, sizes, scale_factor, cfg, stable=False):
    """The original `postprocess_decoded` (select_topk per level, then finish); with `stable`
    every sort is stable: the semantics the new code implements exactly."""
    sel = [[], [], [], []]
    offset = 0
    for b, s in zip(boxes_in.split(list(sizes)), scores.split(list(sizes))):
        vals, keep, labels = old_select_topk(s, cfg.score_thr, cfg.nms_pre, stable)
        for lst, v in zip(sel, (b[keep], vals, labels, keep + offset)):
            lst.append(v)
        offset += b.shape[0]
    boxes_in, scores, labels, inds = (torch.cat(x) for x in sel)
    sw, sh = scale_factor
    boxes = boxes_in * boxes_in.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh])
    if cfg.min_bbox_size >= 0:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        boxes, boxes_in, scores, labels, inds = boxes[ok], boxes_in[ok], scores[ok], labels[ok], inds[ok]
    keep = old_batched_nms(boxes, scores, labels, cfg.nms_iou)
    if stable:
        keep = by_score_then_index(keep, scores)
    keep = keep[: cfg.max_per_img]
    return boxes[keep], scores[keep], labels[keep], inds[keep], boxes_in[keep]


def assert_same_detections(raw, old, exact_order=True):
    if exact_order:
        for got, want in zip((raw.boxes, raw.scores, raw.labels, raw.prior_inds, raw.boxes_input), old):
            assert torch.equal(got, want)
    else:  # same set, same score sequence: the order can differ only among equal scores
        assert sorted(zip(raw.prior_inds.tolist(), raw.labels.tolist())) == \
            sorted(zip(old[3].tolist(), old[2].tolist()))
        assert torch.equal(raw.scores, old[1])


@pytest.fixture(autouse=True, params=["compact", "masked"])
def list_mode(request, monkeypatch):
    """Every test with both ways of handling the search's lists: shortened by boolean masks
    (the CPU's way) and kept at fixed sizes under masks (the GPU's, no host sync per mask)."""
    monkeypatch.setattr(nms_mod, "compact_lists", lambda t: request.param == "compact")
    return request.param


@pytest.fixture(autouse=True)
def poisoned_kept_slots(monkeypatch):
    """The search leaves its kept-box buffers unfilled (only written slots are read); every test
    here fills them with label-0 boxes that would suppress everything of label 0 (a huge box of
    area 0: IoU inf), so a read of an unwritten slot changes the kept sets."""
    real = nms_mod._kept_buffers

    def poisoned(bsz, slots, boxes):
        idx, box, area, lab = real(bsz, slots, boxes)
        for t in (idx, area, lab):
            t.fill_(0)
        box.copy_(box.new_tensor([-1e6, -1e6, 1e6, 1e6]).expand_as(box))
        return idx, box, area, lab
    monkeypatch.setattr(nms_mod, "_kept_buffers", poisoned)


# ---- inputs ---------------------------------------------------------------------------------
def random_boxes(n, num_classes, seed, span=640.0, size=80.0, ties=0, min_size=1.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * span
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * size + min_size], 1)
    scores = torch.rand(n, generator=g)
    if ties:  # only `ties` distinct values: exact ties everywhere
        scores = torch.randint(0, ties, (n,), generator=g).float() / ties
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return boxes, scores, labels


def check_nms(boxes, scores, labels, thr, max_keep=None):
    """New vs oracle. Below SPLIT_THR the oracle's order is already (score desc, index asc)."""
    old = old_batched_nms(boxes, scores, labels, thr)
    if boxes.shape[0] >= SPLIT_THR:
        old = by_score_then_index(old, scores)
    new = batched_nms_topk(boxes, scores, labels, thr, max_keep)
    assert new.tolist() == old[:max_keep].tolist()
    return old


# ---- NMS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n,num_classes", [(1, 1), (7, 1), (300, 1), (2000, 3), (2000, 80)])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.65, 1.0])
def test_nms_equals_old_below_split(seed, n, num_classes, thr):
    boxes, scores, labels = random_boxes(n, num_classes, seed)
    old = check_nms(boxes, scores, labels, thr)
    assert batched_nms_topk(boxes, scores, labels, thr, 10).tolist() == old[:10].tolist()


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("ties", [2, 7, 1000])
@pytest.mark.parametrize("n,num_classes", [(500, 1), (3000, 5), (12000, 80)])
def test_nms_exact_score_ties(seed, ties, n, num_classes):
    boxes, scores, labels = random_boxes(n, num_classes, seed, span=200, ties=ties)
    for max_keep in ((1, 50, 300) if n >= SPLIT_THR else (None, 1, 50, 300)):
        check_nms(boxes, scores, labels, 0.5, max_keep)


@pytest.mark.parametrize("n", [50, 3000, 12000])
def test_nms_identical_and_zero_area_boxes(n):
    boxes, scores, labels = random_boxes(n, 3, 0, span=50, size=20)
    boxes[::3] = boxes[0]  # many identical boxes, some with equal scores
    scores[::6] = scores[0]
    boxes[1::5, 2] = boxes[1::5, 0]  # zero width: IoU 0 with others, 0/0 = NaN with each other
    boxes[2::7, 3] = boxes[2::7, 1]
    boxes[4::11] = boxes[4]  # identical zero-area boxes
    boxes[4::11, 2:] = boxes[4::11, :2]
    for thr in (0.0, 0.5, 1.0):
        for max_keep in ((3, 40) if n >= SPLIT_THR else (None, 3, 40)):
            check_nms(boxes, scores, labels, thr, max_keep)


def test_nms_offset_arithmetic_below_split_thr():
    """Below SPLIT_THR the original adds class offsets to the boxes (mmcv's trick), which rounds
    small boxes at large coordinates; the kept set depends on it and must be reproduced."""
    g = torch.Generator().manual_seed(1)
    n = 3000
    xy = torch.rand(n, 2, generator=g) * 20 + 4000
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 3 + 1], 1)
    scores, labels = torch.rand(n, generator=g), torch.randint(0, 80, (n,), generator=g)
    old = check_nms(boxes, scores, labels, 0.5)
    raw = torch.cat([idx[torchvision.ops.nms(boxes[idx], scores[idx], 0.5)]
                     for idx in ((labels == c).nonzero().view(-1) for c in labels.unique())])
    assert set(raw.tolist()) != set(old.tolist())  # the test is sensitive to the offsets
    # negative coordinates: with offsets, boxes of different classes can meet, as in the original
    boxes -= 4020
    check_nms(boxes, scores, labels, 0.5)


@pytest.mark.parametrize("n", [SPLIT_THR - 1, SPLIT_THR, 30000])
def test_nms_many_candidates(n):
    boxes, scores, labels = random_boxes(n, 80, 5)
    check_nms(boxes, scores, labels, 0.65, 300)


def test_nms_90000_candidates_80_classes():
    boxes, scores, labels = random_boxes(90000, 80, 6)
    check_nms(boxes, scores, labels, 0.65, 300)
    # max_keep beyond the survivors: heavily overlapping boxes, few survive
    g = torch.Generator().manual_seed(7)
    centers = torch.rand(8, 2, generator=g) * 600
    xy = centers[torch.randint(0, 8, (90000,), generator=g)] + torch.rand(90000, 2, generator=g)
    boxes = torch.cat([xy, xy + 50 + torch.rand(90000, 2, generator=g)], 1)
    old = check_nms(boxes, scores, labels, 0.65, 5000)
    assert len(old) < 5000
    check_nms(boxes, scores, labels, 0.65, 300)


def test_nms_many_ties_many_candidates():
    """So many equal scores that the sampled visiting-order threshold is useless (top-k path)."""
    boxes, scores, labels = random_boxes(40000, 80, 12, span=600, ties=2)
    check_nms(boxes, scores, labels, 0.5, 50)


def test_nms_one_class_many_candidates():
    boxes, scores, labels = random_boxes(30000, 1, 8, span=2000, size=30)
    check_nms(boxes, scores, labels, 0.65, 300)


def test_nms_empty():
    e = torch.zeros((0, 4))
    assert batched_nms_topk(e, e[:, 0], e[:, 0].long(), 0.5, 10).numel() == 0
    assert batched_nms_topk(e, e[:, 0], e[:, 0].long(), 0.5).numel() == 0
    out = batched_nms_topk_padded(torch.zeros(2, 0, 4), torch.zeros(2, 0), torch.zeros(2, 0).long(),
                                  torch.zeros(2, 0, dtype=torch.bool), 0.5, 5)
    assert [o.numel() for o in out] == [0, 0]


@pytest.mark.parametrize("max_keep", [None, 1, 100])
def test_nms_padded_batch_images_never_mix(max_keep):
    counts = [0, 40, 3000, SPLIT_THR + 500]  # both regimes in one batch
    n = max(counts) + 7
    boxes, scores, labels = random_boxes(len(counts) * n, 20, 9, span=300, ties=5000)
    boxes, scores, labels = boxes.view(len(counts), n, 4), scores.view(-1, n), labels.view(-1, n)
    g = torch.Generator().manual_seed(10)
    valid = torch.zeros(len(counts), n, dtype=torch.bool)
    for b, c in enumerate(counts):
        valid[b, torch.randperm(n, generator=g)[:c]] = True
    got = batched_nms_topk_padded(boxes, scores, labels, valid, 0.5, max_keep)
    for b in range(len(counts)):
        idx = valid[b].nonzero().view(-1)
        old = old_batched_nms(boxes[b, idx], scores[b, idx], labels[b, idx], 0.5)
        old = by_score_then_index(old, scores[b, idx])  # same as old below SPLIT_THR
        assert got[b].tolist() == idx[old][:max_keep].tolist()


def test_threshold_compared_as_double():
    """torchvision compares the float IoU with the double threshold: IoU exactly 0.5 survives
    thr 0.5, and a float IoU just above a threshold that is not a float suppresses."""
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.zeros(3, dtype=torch.long)
    for thr in (1 / 3, 0.5, float(torch.tensor(1 / 3)), 0.3333333):
        check_nms(boxes, scores, labels, thr)


# ---- the post-processing ---------------------------------------------------------------------
def synthetic_decoded(seed, sizes, num_classes, ties=0, span=160.0):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    xy = torch.rand(n, 2, generator=g) * span
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40], 1).clamp(0, span)
    # distinct scores unless `ties`: then only `ties` values
    scores = (torch.randperm(n * num_classes, generator=g).view(n, num_classes) + 1).float() / (n * num_classes) * 0.3
    if ties:
        scores = torch.randint(1, ties, (n, num_classes), generator=g).float() / ties * 0.3
    return boxes, scores


@pytest.mark.parametrize("split_thr", [SPLIT_THR, 40, 400])  # small values exercise split mode
@pytest.mark.parametrize("over", [
    dict(), dict(nms_pre=30), dict(nms_pre=200, max_per_img=50), dict(max_per_img=7, nms_iou=0.3),
    dict(min_bbox_size=8.0), dict(min_bbox_size=8.0, nms_pre=150), dict(score_thr=0.2),
    dict(max_per_img=0), dict(max_per_img=-1), dict(nms_pre=-1, nms_iou=0.0), dict(nms_iou=1.0),
    dict(max_per_img=2000, nms_pre=300)])
@pytest.mark.parametrize("ties", [0, 40])
@pytest.mark.parametrize("grid", [False, True])  # NMS on a gathered candidate list / on the grid
def test_postprocess_decoded_equals_old(monkeypatch, split_thr, over, ties, grid):
    monkeypatch.setattr(nms_mod, "SPLIT_THR", split_thr)
    monkeypatch.setattr(pp_mod, "SPLIT_THR", split_thr)
    if grid:
        monkeypatch.setattr(pp_mod, "_COMPACT", 0)
    sizes = [400, 100, 25]
    boxes, scores = synthetic_decoded(3, sizes, 6, ties)
    cfg = dataclasses.replace(rcfg.TestConfig(), **over)
    raw = postprocess_decoded(boxes, scores, sizes, (1.25, 0.8), cfg)
    assert_same_detections(raw, old_postprocess_decoded(boxes, scores, sizes, (1.25, 0.8), cfg, stable=True))
    if not ties:
        assert_same_detections(raw, old_postprocess_decoded(boxes, scores, sizes, (1.25, 0.8), cfg))


@pytest.mark.parametrize("grid", [False, True])
def test_deferred_cut_redo(monkeypatch, grid):
    """Split mode whatever the nms_pre cut removes, but NMS must visit more than nms_pre boxes
    (iou 0 suppresses almost everything): the image is redone with the exact cut."""
    monkeypatch.setattr(nms_mod, "SPLIT_THR", 40)
    monkeypatch.setattr(pp_mod, "SPLIT_THR", 40)
    if grid:
        monkeypatch.setattr(pp_mod, "_COMPACT", 0)
    sizes = [400, 100, 25]
    boxes, scores = synthetic_decoded(4, sizes, 3, ties=30)
    calls = []
    real = pp_mod._cut
    monkeypatch.setattr(pp_mod, "_cut", lambda *a: calls.append(1) or real(*a))
    cfg = dataclasses.replace(rcfg.TestConfig(), nms_pre=60, nms_iou=0.0, max_per_img=100)
    raw = postprocess_decoded(boxes, scores, sizes, (1.0, 1.0), cfg)
    assert calls, "the redo path was not taken"
    assert_same_detections(raw, old_postprocess_decoded(boxes, scores, sizes, (1.0, 1.0), cfg, stable=True))


@pytest.mark.parametrize("ties", [0, 5])
def test_select_mask_ties_at_the_cut(ties):
    g = torch.Generator().manual_seed(11)
    scores = torch.rand(3, 500 * 4, generator=g)
    if ties:
        scores = torch.randint(0, ties, scores.shape, generator=g).float() / ties + 0.01
    for k in (0, 1, 37, 700, 2000, 5000):
        got = select_mask(scores, 0.2, k)
        for b in range(3):
            _, keep, labels = old_select_topk(scores[b].view(500, 4), 0.2, k, stable=True)
            want = torch.zeros(500, 4, dtype=torch.bool)
            want[keep, labels] = True
            assert torch.equal(got[b].view(500, 4), want)


# ---- the fixture: tiny weights, whole path at the reference settings ------------------------
CASES = ["square", "portrait", "large"]


@pytest.fixture(scope="module")
def heads():
    model = rtmdet.load(need(DET_FIX / "weights.pth"))
    imgs = [load_fixture(DET_FIX / f"predict_{c}.pth")["image_bgr"].numpy() for c in CASES]
    with torch.inference_mode():
        x, metas = model.preprocess(imgs)
        cls, reg = model(x)[:2]
    priors = grid_priors([c.shape[-2:] for c in cls], model.cfg.strides)
    return model, cls, reg, priors, metas


def old_postprocess_single(cls_scores, bbox_preds, priors, img_shape, scale_factor, cfg):
    boxes_in = distance2bbox(torch.cat(priors), torch.cat([r.permute(1, 2, 0).reshape(-1, 4) for r in bbox_preds]),
                             max_shape=img_shape)
    scores = torch.cat([c.permute(1, 2, 0).reshape(-1, c.shape[0]) for c in cls_scores]).sigmoid()
    return old_postprocess_decoded(boxes_in, scores, [p.shape[0] for p in priors], scale_factor, cfg)


@pytest.mark.parametrize("over", [dict(), dict(max_per_img=7), dict(nms_pre=5),
                                  dict(nms_pre=1000, max_per_img=100, nms_iou=0.6, score_thr=0.01)])
def test_fixture_whole_path_equals_old(heads, over):
    """Batch of the three predict images at the reference settings (~90000 candidates each):
    the same detections as the original, in the same order up to exactly equal scores."""
    model, cls, reg, priors, metas = heads
    cfg = dataclasses.replace(model.test_cfg, **over)
    new = postprocess_batch(cls, reg, priors, [m.img_shape for m in metas],
                            [m.scale_factor for m in metas], cfg)
    for i, m in enumerate(metas):
        old = old_postprocess_single([c[i] for c in cls], [b[i] for b in reg], priors,
                                     m.img_shape, m.scale_factor, cfg)
        assert_same_detections(new[i], old, exact_order=False)
        single = postprocess_single([c[i] for c in cls], [b[i] for b in reg], priors,
                                    m.img_shape, m.scale_factor, cfg)
        assert_same_detections(single, (new[i].boxes, new[i].scores, new[i].labels, new[i].prior_inds,
                                        new[i].boxes_input))


@pytest.mark.parametrize("over", [dict(), dict(score_thr=0.05, nms_pre=300)])
def test_batched_score_preparation_equals_per_image(heads, monkeypatch, over):
    """The batch-at-once score preparation (GPUs) gives the per-image one's (CPU) detections,
    bit for bit: the sigmoid runs on the same contiguous layout either way."""
    import rtmdet.ops.postprocess as pp
    model, cls, reg, priors, metas = heads
    cfg = dataclasses.replace(model.test_cfg, **over)
    args = (cls, reg, priors, [m.img_shape for m in metas], [m.scale_factor for m in metas], cfg)
    per_image = postprocess_batch(*args)
    monkeypatch.setattr(pp, "_per_image_scores", lambda ref: False)
    at_once = postprocess_batch(*args)
    assert any(len(r.scores) for r in per_image)
    for a, b in zip(per_image, at_once):
        assert_same_detections(b, (a.boxes, a.scores, a.labels, a.prior_inds, a.boxes_input))


@pytest.mark.parametrize("list_mode", ["masked"], indirect=True)  # counted the GPU's way only
@pytest.mark.parametrize("iou,blocks,most", [(0.65, 1, 5), (0.3, 3, 12)])
def test_fixture_host_syncs(heads, list_mode, monkeypatch, iou, blocks, most):
    """What a GPU would wait for (counted on the CPU, with the GPU's fixed-size lists): each
    value the loop needs read to the host once, no boolean-mask indexing (its nonzero is a
    wait), one check per two fixed-point steps, the decisions before the search taken on the
    host from one read of the counts, small blocks' pairs formed densely (no pair count),
    nonzeros of known size sized by the host. At the reference settings one block of the
    search: 5 syncs for the batch; at IoU 0.3 three blocks: 12 (counted the same way,
    `nonzero(as_tuple=True)` included: 10 and 21 with pair lists in every block and the
    decisions on the device)."""
    from rtmdet.deploy.bench import OpCounter
    from rtmdet.ops.boxes import level_sizes
    from rtmdet.ops.postprocess import postprocess_decoded_batch
    model, cls, reg, priors, metas = heads
    cfg = dataclasses.replace(model.test_cfg, nms_iou=iou)
    runs = []
    real_fixed = nms_mod._fixed_point
    monkeypatch.setattr(nms_mod, "_fixed_point", lambda *a: runs.append(1) or real_fixed(*a))
    with torch.inference_mode():
        out = model.decode((cls, reg), metas[0].img_shape)
        sizes = level_sizes(*metas[0].img_shape, model.cfg.strides)
        args = (out["boxes"], out["scores"], sizes, [m.scale_factor for m in metas], cfg)
        postprocess_decoded_batch(*args)  # caches (the IoU threshold's float32 bound)
        runs.clear()
        with OpCounter() as c:
            got = postprocess_decoded_batch(*args)
    assert all(len(r.scores) == 300 for r in got)
    assert len(runs) == blocks
    assert c.syncs <= most, c.syncs


# ---- CUDA: the same kept sets as the CPU oracle -------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cuda_cases():
    yield "random 2000x80", random_boxes(2000, 80, 0), 0.65
    yield "ties", random_boxes(3000, 5, 1, span=200, ties=7), 0.5
    boxes, scores, labels = random_boxes(3000, 3, 0, span=50, size=20)
    boxes[::3], scores[::6] = boxes[0], scores[0]
    boxes[1::5, 2] = boxes[1::5, 0]
    yield "identical and zero-area", (boxes, scores, labels), 0.5
    yield "30000x80", random_boxes(30000, 80, 5), 0.65
    yield "one class 30000", random_boxes(30000, 1, 8, span=2000, size=30), 0.65
    yield "90000x80", random_boxes(90000, 80, 6), 0.65


@cuda
@pytest.mark.parametrize("case", range(6))
def test_nms_on_cuda_keeps_what_the_cpu_oracle_keeps(case):
    name, (boxes, scores, labels), thr = list(_cuda_cases())[case]
    old = old_batched_nms(boxes, scores, labels, thr)
    old = by_score_then_index(old, scores)
    for max_keep in (1, 50, 300):
        new = batched_nms_topk(boxes.cuda(), scores.cuda(), labels.cuda(), thr, max_keep)
        assert new.cpu().tolist() == old[:max_keep].tolist(), name


@cuda
@pytest.mark.parametrize("over", [dict(), dict(nms_pre=200, max_per_img=50), dict(min_bbox_size=8.0),
                                  dict(score_thr=0.2)])
@pytest.mark.parametrize("ties", [0, 40])
def test_postprocess_on_cuda_equals_the_cpu_oracle(over, ties):
    sizes = [400, 100, 25]
    boxes, scores = synthetic_decoded(3, sizes, 6, ties)
    cfg = dataclasses.replace(rcfg.TestConfig(), **over)
    raw = postprocess_decoded(boxes.cuda(), scores.cuda(), sizes, (1.25, 0.8), cfg)
    old = old_postprocess_decoded(boxes, scores, sizes, (1.25, 0.8), cfg, stable=True)
    raw = dataclasses.replace(raw, **{f.name: getattr(raw, f.name).cpu() for f in dataclasses.fields(raw)})
    assert_same_detections(raw, old)
