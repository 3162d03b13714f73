"""The fixed-shape post-processing (`ops.fixed_nms`) against the original algorithm.

What it returns for an image it marks PROVEN must be the reference's detections bit for bit;
every other image is redone by the block-wise search, so `postprocess_decoded_batch` with the
fixed path first must equal the oracle everywhere. Each reason for not proving an image is
provoked on purpose, and the tests check the proofs are not vacuous (most images proven)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import rtmdet
import rtmdet.ops.fixed_nms as fx
import rtmdet.ops.nms as nms_mod
import rtmdet.ops.postprocess as pp_mod
from rtmdet import config as rcfg
from rtmdet.deploy.bench import OpCounter
from rtmdet.ops.boxes import level_sizes
from rtmdet.ops.fixed_nms import (MODE_UNKNOWN, NOT_CONVERGED, PROVEN, TOO_SHALLOW, fixed_select,
                                  order_keys)
from rtmdet.ops.postprocess import postprocess_decoded_batch
from helpers import DET_FIX, load_fixture, need
from test_nms_fast import assert_same_detections, old_postprocess_decoded, synthetic_decoded


def factors_of(scale_factors):
    return torch.tensor([[1 / sw, 1 / sh, 1 / sw, 1 / sh] for sw, sh in scale_factors])


def select(boxes, scores, sizes, scale_factors, cfg, **kw):
    return fixed_select(boxes, scores, sizes, factors_of(scale_factors), cfg.score_thr, cfg.nms_pre,
                        cfg.nms_iou, cfg.max_per_img, cfg.min_bbox_size, **kw)


def rows_of(sel, b):
    c = int(sel.count[b])
    return (sel.boxes[b, :c], sel.scores[b, :c], sel.labels[b, :c], sel.prior_inds[b, :c],
            sel.boxes_input[b, :c])


def assert_equal_rows(got, want):
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.fixture
def fixed_first(monkeypatch):
    """The post-processing with the fixed path first, as on a GPU with CUDA graphs; records the
    statuses."""
    seen = Seen()
    real = fx.fixed_select
    monkeypatch.setattr(pp_mod, "_fixed_first", lambda ref: True)
    monkeypatch.setattr(pp_mod, "fixed_select", lambda *a, **k: seen.add(real(*a, **k)))
    return seen


class Seen(list):
    """The selections made; `statuses` their images' statuses (read only when asked: reading
    is a host sync)."""

    def add(self, sel):
        self.append(sel)
        return sel

    @property
    def statuses(self):
        return [s for sel in self for s in sel.status.tolist()]

    @property
    def final(self):
        """Per image of the batch, its status after the second pass (if any)."""
        out = self[0].status.tolist()
        if len(self) > 1:
            again = iter(self[1].status.tolist())
            out = [s if s == PROVEN or s == MODE_UNKNOWN else next(again) for s in out]
        return out


# ---- the visiting order ---------------------------------------------------------------------
@pytest.mark.parametrize("positive", [True, False])
def test_order_keys_are_score_desc_then_index_asc(positive):
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 9, (3, 500), generator=g).float() / 8  # many exact ties
    if not positive:  # negative scores, -0.0 (equal to 0.0), infinities
        s = s - 0.5
        s[0, ::7] = -0.0
        s[0, 3::7] = 0.0
        s[1, ::11], s[1, 5::11] = float("inf"), float("-inf")
    valid = s > (-10 if not positive else 0)
    key = order_keys(s, valid, positive)
    got = key.topk(s.shape[1], dim=1)[1]
    want = s.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True, stable=True)[1]
    for b in range(3):
        n = int(valid[b].sum())
        assert got[b, :n].tolist() == want[b, :n].tolist()
    assert bool((key[~valid] == -1).all()) and bool((key[valid] >= 0).all())


# ---- the fixture: tiny weights at the reference settings ------------------------------------
@pytest.fixture(scope="module")
def decoded():
    model = rtmdet.load(need(DET_FIX / "weights.pth"))
    imgs = [load_fixture(DET_FIX / f"predict_{c}.pth")["image_bgr"].numpy()
            for c in ("square", "portrait", "large")]
    with torch.inference_mode():
        x, metas = model.preprocess(imgs)
        out = model.decode(model(x), tuple(x.shape[-2:]))
    sizes = level_sizes(*metas[0].img_shape, model.cfg.strides)
    return model, out["boxes"], out["scores"], sizes, [m.scale_factor for m in metas]


@pytest.mark.parametrize("over,status", [
    (dict(), PROVEN), (dict(max_per_img=7), PROVEN), (dict(max_per_img=1, nms_iou=0.3), PROVEN),
    (dict(score_thr=0.3), PROVEN),  # no candidates at all
    (dict(score_thr=0.02, min_bbox_size=20.0), PROVEN),  # offset mode, everything visited
    (dict(nms_pre=5), MODE_UNKNOWN),  # levels cut, fewer than SPLIT_THR left: offsets unknown
    (dict(nms_pre=1000, max_per_img=100, nms_iou=0.6, score_thr=0.01), MODE_UNKNOWN)])
def test_fixture_proven_rows_equal_the_block_search(decoded, over, status):
    model, boxes, scores, sizes, sf = decoded
    cfg = dataclasses.replace(model.test_cfg, **over)
    sel = select(boxes, scores, sizes, sf, cfg)
    assert sel.status.tolist() == [status] * 3
    want = pp_mod._postprocess_grid(scores, sizes, boxes, sf, cfg, fixed=False)
    for b, w in enumerate(want):
        if status == PROVEN:
            assert_equal_rows(rows_of(sel, b), (w.boxes, w.scores, w.labels, w.prior_inds, w.boxes_input))


def test_fixture_whole_path_one_host_sync(decoded, fixed_first):
    """Batch of 3 at the reference settings (~90000 candidates each): the oracle's detections,
    with one host sync for the batch (the block-wise search needs ~19)."""
    model, boxes, scores, sizes, sf = decoded
    cfg = model.test_cfg
    nms_mod.threshold_below(float(cfg.nms_iou), torch.float32)  # a cached host-side constant
    with OpCounter() as c:
        got = postprocess_decoded_batch(boxes, scores, sizes, sf, cfg)
    assert c.syncs == 1 and fixed_first.statuses == [PROVEN] * 3
    with OpCounter() as c_old:
        pp_mod._postprocess_grid(scores, sizes, boxes, sf, cfg, fixed=False)
    assert c_old.syncs > 10
    for b in range(3):
        old = old_postprocess_decoded(boxes[b], scores[b], sizes, sf[b], cfg, stable=True)
        assert_same_detections(got[b], old)


# ---- synthetic inputs: every setting, ties, both NMS modes ----------------------------------
OVERS = [dict(), dict(nms_pre=30), dict(nms_pre=200, max_per_img=50), dict(max_per_img=7, nms_iou=0.3),
         dict(min_bbox_size=8.0), dict(min_bbox_size=8.0, nms_pre=150), dict(score_thr=0.2),
         dict(max_per_img=0), dict(max_per_img=-1), dict(nms_pre=-1, nms_iou=0.0), dict(nms_iou=1.0),
         dict(max_per_img=2000, nms_pre=300), dict(min_bbox_size=-1.0)]


@pytest.mark.parametrize("split_thr", [nms_mod.SPLIT_THR, 40, 400])
@pytest.mark.parametrize("over", OVERS)
@pytest.mark.parametrize("ties", [0, 40])
def test_synthetic_equals_old(monkeypatch, fixed_first, split_thr, over, ties):
    monkeypatch.setattr(nms_mod, "SPLIT_THR", split_thr)
    monkeypatch.setattr(pp_mod, "SPLIT_THR", split_thr)
    sizes = [400, 100, 25]
    cfg = dataclasses.replace(rcfg.TestConfig(), **over)
    imgs = [synthetic_decoded(s, sizes, 6, ties) for s in (3, 4)]
    boxes, scores = torch.stack([i[0] for i in imgs]), torch.stack([i[1] for i in imgs])
    sf = [(1.25, 0.8), (0.5, 0.5)]
    got = postprocess_decoded_batch(boxes, scores, sizes, sf, cfg)
    for b in range(2):
        assert_same_detections(got[b], old_postprocess_decoded(boxes[b], scores[b], sizes, sf[b], cfg,
                                                               stable=True))
    if cfg.max_per_img > 0 and cfg.nms_pre in (-1, 30000) and split_thr == nms_mod.SPLIT_THR \
            and cfg.max_per_img <= 300 and cfg.nms_iou > 0:  # (IoU 0: long chains, deep search)
        assert fixed_first.statuses == [PROVEN, PROVEN]  # uncut, offset mode, 3150 candidates: in reach


def detector_like(seed, sizes, num_classes, objects=12, span=640.0):
    """What a trained detector gives: per object a cluster of priors scoring its class high
    (and a confusable class lower) with boxes jittered around the object's box; elsewhere low
    background scores, a few of them above 0.001."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    centre = torch.rand(n, 2, generator=g) * span
    half = torch.rand(n, 2, generator=g) * 30 + 4
    scores = torch.rand(n, num_classes, generator=g) * 0.0015
    for _ in range(objects):
        c = torch.rand(2, generator=g) * span
        h = torch.rand(2, generator=g) * 80 + 10
        near = ((centre - c).abs() < h).all(1).nonzero().view(-1)
        cls = int(torch.randint(0, num_classes, (1,), generator=g))
        centre[near] = c + torch.randn(len(near), 2, generator=g) * h * 0.1
        half[near] = h * (1 + torch.randn(len(near), 2, generator=g) * 0.1).clamp(min=0.5)
        scores[near, cls] = torch.rand(len(near), generator=g) * 0.6 + 0.3
        scores[near, (cls + 1) % num_classes] = torch.rand(len(near), generator=g) * 0.2
    boxes = torch.cat([centre - half, centre + half], 1).clamp(0, span)
    return boxes, scores


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("over", [dict(), dict(score_thr=0.05), dict(max_per_img=100, nms_iou=0.5)])
def test_detector_like_equals_old(fixed_first, seed, over):
    sizes = [6400, 1600, 400]
    imgs = [detector_like(seed * 10 + k, sizes, 80) for k in range(2)]
    boxes, scores = torch.stack([i[0] for i in imgs]), torch.stack([i[1] for i in imgs])
    cfg = dataclasses.replace(rcfg.TestConfig(), **over)
    sf = [(1.0, 1.0), (0.6, 0.6)]
    got = postprocess_decoded_batch(boxes, scores, sizes, sf, cfg)
    for b in range(2):
        assert_same_detections(got[b], old_postprocess_decoded(boxes[b], scores[b], sizes, sf[b], cfg,
                                                               stable=True))
    assert fixed_first.final == [PROVEN, PROVEN]  # (these dense clusters: often on the second pass)


# ---- adversarial: ties, identical and zero-area boxes, one class, many candidates --------------
def adversarial(seed, n, num_classes, span=60.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * span
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 20], 1)
    boxes[::3] = boxes[0]  # identical boxes
    boxes[1::5, 2] = boxes[1::5, 0]  # zero width
    boxes[4::11, 2:] = boxes[4::11, :2]  # zero area
    scores = torch.randint(1, 6, (n, num_classes), generator=g).float() / 6  # heavy ties
    return boxes, scores


@pytest.mark.parametrize("num_classes,n", [(1, 30000), (80, 400), (3, 5000)])
@pytest.mark.parametrize("thr", [0.0, 0.5, 1.0])
def test_adversarial_equals_old(fixed_first, num_classes, n, thr):
    boxes, scores = adversarial(n + num_classes, n, num_classes)
    sizes = [n - n // 5, n // 5]
    cfg = dataclasses.replace(rcfg.TestConfig(), nms_iou=thr, max_per_img=100)
    got = postprocess_decoded_batch(boxes[None], scores[None], sizes, [(1.0, 1.0)], cfg)[0]
    assert_same_detections(got, old_postprocess_decoded(boxes, scores, sizes, (1.0, 1.0), cfg, stable=True))


def test_negative_scores_and_threshold(fixed_first):
    """Scores need not be probabilities (any float order works, -0.0 equal to 0.0)."""
    boxes, scores = synthetic_decoded(5, [300, 75], 4, ties=9)
    scores = scores - 0.15
    scores[::4, 0] = -0.0
    scores[1::4, 0] = 0.0
    cfg = dataclasses.replace(rcfg.TestConfig(), score_thr=-0.1, max_per_img=60)
    got = postprocess_decoded_batch(boxes[None], scores[None], [300, 75], [(1.0, 1.0)], cfg)[0]
    want = old_postprocess_decoded(boxes, scores, [300, 75], (1.0, 1.0), cfg, stable=True)
    assert_same_detections(got, want)
    assert fixed_first.statuses == [PROVEN]


# ---- each reason not to prove: the retry, the redo ------------------------------------------
@pytest.mark.parametrize("case", ["mode unknown", "shallow, retried", "shallow twice",
                                  "not converged, retried", "never converges"])
def test_unproven_images_are_retried_or_redone(monkeypatch, fixed_first, case):
    """The first image of the batch is not proven on the first pass, the second is: a second
    pass (every candidate, more iterations) or the block-wise search finishes the first, and
    both equal the oracle."""
    sizes = [6400, 1600, 400]
    imgs = [detector_like(7, sizes, 80, objects=8), detector_like(8, sizes, 80, objects=2)]
    boxes, scores = torch.stack([i[0] for i in imgs]), torch.stack([i[1] for i in imgs])
    scores[1] = scores[1].clamp(max=0.04)  # the second image: no candidates, proven
    cfg = dataclasses.replace(rcfg.TestConfig(), score_thr=0.05)
    real = fx.fixed_select
    first = {}
    if case == "mode unknown":  # a level cut, fewer than SPLIT_THR left: offsets unknown
        cfg = dataclasses.replace(cfg, nms_pre=200)
        want = [[MODE_UNKNOWN, PROVEN]]
    elif case.startswith("shallow"):
        first = dict(depth=96)
        want = [[TOO_SHALLOW, PROVEN], [PROVEN if case.endswith("retried") else TOO_SHALLOW]]
    elif case.startswith("not converged"):
        first = dict(iterations=0)
        want = [[NOT_CONVERGED, PROVEN], [PROVEN]]
    else:
        monkeypatch.setattr(pp_mod, "RETRY_ITERATIONS", 0)
        first = dict(iterations=0)
        want = [[NOT_CONVERGED, PROVEN], [NOT_CONVERGED]]
    calls = []

    def patched(*a, **k):  # `first` on the first pass (and on the second: "shallow twice")
        calls.append(k)
        both = case == "shallow twice"
        return fixed_first.add(real(*a, **({**k, **first} if len(calls) == 1 or both else k)))
    monkeypatch.setattr(pp_mod, "fixed_select", patched)
    redone = []
    grid = pp_mod._postprocess_grid
    monkeypatch.setattr(pp_mod, "_postprocess_grid",
                        lambda s, *a, **k: redone.append(len(s)) or grid(s, *a, **k))
    sf = [(1.0, 1.0), (1.0, 1.0)]
    got = postprocess_decoded_batch(boxes, scores, sizes, sf, cfg)
    assert [sel.status.tolist() for sel in fixed_first] == want
    assert redone == [2] + ([1] if want[-1][0] != PROVEN else [])  # the call, then the redo
    for b in range(2):
        assert_same_detections(got[b], old_postprocess_decoded(boxes[b], scores[b], sizes, sf[b], cfg,
                                                               stable=True))


# ---- capturable: no host sync, no data-dependent shape, nothing from the host ------------------
def test_runs_on_the_meta_device():
    """On the meta device every value is unknown: a host sync, a shape that depends on the data
    or a tensor made on the host would fail or show here. What runs here can be captured in a
    CUDA graph."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NoHost(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat = torch.utils._pytree.tree_leaves((args, kwargs))
            devices = {t.device.type for t in flat if isinstance(t, torch.Tensor) and t.dim() > 0}
            assert devices <= {"meta"}, f"{func} touches {devices}"
            return func(*args, **(kwargs or {}))
    sizes = [6400, 1600, 400]
    n = sum(sizes)
    cfg = rcfg.TestConfig()
    with OpCounter() as c, NoHost():
        sel = fixed_select(torch.empty(2, n, 4, device="meta"), torch.empty(2, n, 80, device="meta"),
                           sizes, torch.empty(2, 4, device="meta"), cfg.score_thr, cfg.nms_pre,
                           cfg.nms_iou, cfg.max_per_img, cfg.min_bbox_size)
    assert c.syncs == 0
    assert sel.boxes.shape == (2, 300, 4) and sel.status.shape == (2,)


# ---- CUDA ------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("over", [dict(), dict(score_thr=0.05), dict(max_per_img=100, nms_iou=0.5)])
def test_cuda_equals_the_cpu_oracle(over):
    sizes = [6400, 1600, 400]
    imgs = [detector_like(k, sizes, 80, objects=4) for k in range(3)]
    boxes, scores = torch.stack([i[0] for i in imgs]), torch.stack([i[1] for i in imgs])
    cfg = dataclasses.replace(rcfg.TestConfig(), **over)
    sf = [(1.0, 1.0), (0.6, 0.6), (1.3, 1.3)]
    sel = select(boxes.cuda(), scores.cuda(), sizes, sf, cfg)  # the first pass proves all three
    assert sel.status.tolist() == [PROVEN] * 3
    for b in range(3):
        old = old_postprocess_decoded(boxes[b], scores[b], sizes, sf[b], cfg, stable=True)
        assert_equal_rows([t.cpu() for t in rows_of(sel, b)], old)
    # the whole path (retry, block-wise redo) on denser clusters
    imgs = [detector_like(k, sizes, 80, objects=12) for k in range(3)]
    boxes, scores = torch.stack([i[0] for i in imgs]), torch.stack([i[1] for i in imgs])
    with pp_mod.fixed_select_runner(fx.fixed_select):  # the fixed path first, run eagerly
        got = postprocess_decoded_batch(boxes.cuda(), scores.cuda(), sizes, sf, cfg)
    for b in range(3):
        old = old_postprocess_decoded(boxes[b], scores[b], sizes, sf[b], cfg, stable=True)
        assert_equal_rows([getattr(got[b], f).cpu() for f in ("boxes", "scores", "labels", "prior_inds",
                                                               "boxes_input")], old)


# ---- the CUDA-graph runner: wiring and the fallback (the capture itself: tests on CUDA) -------
def test_runner_runs_the_first_pass(decoded, fixed_first):
    model, boxes, scores, sizes, sf = decoded
    calls = []

    def runner(*a, **k):
        calls.append(k)
        return fx.fixed_select(*a, **k)
    with pp_mod.fixed_select_runner(runner):
        got = postprocess_decoded_batch(boxes, scores, sizes, sf, model.test_cfg)
    assert calls == [{}]
    want = pp_mod._postprocess_grid(scores, sizes, boxes, sf, model.test_cfg, fixed=False)
    for g, w in zip(got, want):
        assert_same_detections(g, (w.boxes, w.scores, w.labels, w.prior_inds, w.boxes_input))
    postprocess_decoded_batch(boxes, scores, sizes, sf, model.test_cfg)
    assert len(calls) == 1  # outside the context: not used


def test_graphed_select_falls_back_when_a_capture_fails(decoded, monkeypatch):
    from rtmdet.inference import speed
    model, boxes, scores, sizes, sf = decoded
    cfg = model.test_cfg
    knobs = (cfg.score_thr, cfg.nms_pre, cfg.nms_iou, cfg.max_per_img, cfg.min_bbox_size)
    g = speed.GraphedSelect()
    monkeypatch.setattr(g, "device_type", "cpu")

    def refuse(self, xs):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(speed.CudaGraphNetwork, "_capture", refuse)
    with pytest.warns(RuntimeWarning, match="without a CUDA graph"):
        sel = g(boxes, scores, sizes, factors_of(sf), *knobs)
    assert g.failed and not g.graphs
    want = select(boxes, scores, sizes, sf, cfg)
    for a, b in zip(vars(sel).values(), vars(want).values()):
        assert torch.equal(a, b)
    g(boxes, scores, sizes, factors_of(sf), *knobs)  # eager from now on, no second warning


@cuda
def test_cuda_graph_select_equals_eager():
    """Replayed on new inputs (a stale buffer would show), with both settings' graphs kept."""
    from rtmdet.inference.speed import GraphedSelect
    sizes = [6400, 1600, 400]
    g = GraphedSelect()
    for k in range(3):
        for over in (dict(), dict(score_thr=0.05, max_per_img=100)):
            cfg = dataclasses.replace(rcfg.TestConfig(), **over)
            knobs = (cfg.score_thr, cfg.nms_pre, cfg.nms_iou, cfg.max_per_img, cfg.min_bbox_size)
            boxes, scores = detector_like(k, sizes, 80, objects=4)
            f = factors_of([(1.0 + k / 10, 1.0 + k / 10)]).cuda()
            got = g(boxes[None].cuda(), scores[None].cuda(), sizes, f, *knobs)
            want = fx.fixed_select(boxes[None].cuda(), scores[None].cuda(), sizes, f, *knobs)
            for a, b in zip(vars(got).values(), vars(want).values()):
                assert torch.equal(a, b)
    assert g.failed is None and len(g.graphs) == 2


@cuda
def test_cuda_graph_backend_keeps_the_exact_detections():
    """`cuda_graph=True` without other options: the network, the decoding and the first
    post-processing pass replayed from graphs; the fixture detections of the exact path (TF32
    off: the comparison is with fp32 convolutions), on the capture and on a replay."""
    from helpers import match_detections
    from rtmdet.inference import TorchBackend
    from rtmdet.inference.loop import run_inference
    from rtmdet.inference.speed import SpeedOptions
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        model = rtmdet.load(need(DET_FIX / "weights.pth"), device="cuda")
        imgs = [load_fixture(DET_FIX / f"predict_{c}.pth")["image_bgr"].numpy()
                for c in ("square", "portrait", "large")]
        exact = run_inference(TorchBackend(model), imgs, batch_size=3)
        graphed = TorchBackend(model, SpeedOptions(cuda_graph=True))
        for _ in range(2):
            got = run_inference(graphed, imgs, batch_size=3)
            for g, w in zip(got, exact):
                g, w = g.numpy(), w.numpy()
                assert len(g.scores) == len(w.scores) == 300
                assert match_detections(g.boxes, g.scores, g.labels, w.boxes, w.scores, w.labels) == 0
        assert graphed._select.failed is None and len(graphed._select.graphs) == 1
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
