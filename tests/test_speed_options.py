"""Inference speed options (`rtmdet.inference.speed`): what each changes, that the default path
is untouched, that a prepared copy never goes stale, and that bad values fail where they enter."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import DET_FIX, load_fixture, match_detections, need

import rtmdet
from rtmdet.data.letterbox import letterbox_batch, letterbox_batch_torch
from rtmdet.inference import Detector, TorchBackend
from rtmdet.inference.speed import SpeedOptions, prepare_network

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def model():
    return rtmdet.load(need(DET_FIX / "weights.pth"))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return rtmdet.create("rtmdet-tiny", num_classes=3).eval()


@pytest.mark.parametrize("kw", [dict(half="fp8"), dict(half=1.0), dict(preprocess="gpu"),
                                dict(fuse="yes"), dict(compile=1)])
def test_bad_options_name_the_field(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        SpeedOptions(**kw)


def test_cuda_graph_refused_off_cuda(small):
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        prepare_network(small, SpeedOptions(cuda_graph=True))


def test_default_runs_the_model_itself(small):
    assert prepare_network(small, SpeedOptions()) is small


@pytest.mark.parametrize("shape", [(375, 500), (640, 427), (1200, 1600), (97, 61), (640, 640)])
def test_device_letterbox_within_one_grey_level_of_opencv(shape):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape + (3,), dtype=np.uint8)
    ref, ref_metas = letterbox_batch([img, img[::-1].copy()], (640, 640))
    ours, metas = letterbox_batch_torch([img, img[::-1].copy()], (640, 640), "cpu")
    assert metas == ref_metas and ours.dtype == torch.uint8 and ours.shape == ref.shape
    diff = (ours.int() - torch.from_numpy(ref).int()).abs()
    assert int(diff.max()) <= 1
    if shape == (640, 640):  # no resize: the same bytes
        assert int(diff.max()) == 0
    nh, nw = round(shape[0] * metas[0].scale_factor[1]), round(shape[1] * metas[0].scale_factor[0])
    assert bool((ours[:, :, nh:, :] == 114).all()) and bool((ours[:, :, :, nw:] == 114).all())


def test_device_letterbox_mixed_shapes_keep_their_order():
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in [(300, 400), (200, 100), (300, 400)]]
    ours, _ = letterbox_batch_torch(imgs, (320, 320), "cpu")
    ref, _ = letterbox_batch(imgs, (320, 320))
    assert int((ours.int() - torch.from_numpy(ref).int()).abs().amax(dim=(1, 2, 3)).max()) <= 1
    assert not torch.equal(ours[0], ours[2])  # different images, not a repeated one


def test_device_letterbox_host_half_stacks_on_the_host():
    """`stack_by_shape` (the reading-ahead worker's part) groups same-shape images into one array
    each, a single contiguous image as a view (no copy), a flipped one (negative strides, which
    torch.from_numpy refuses) as a copy; the device half gives what the whole function gives."""
    from rtmdet.data.letterbox import letterbox_stacked_torch, stack_by_shape
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(2))
    c = rng.integers(0, 256, (200, 100, 3), dtype=np.uint8)
    flipped = c[:, ::-1]
    stacked, metas = stack_by_shape([a, c, b, flipped], (320, 320))
    assert [idx for idx, _ in stacked] == [[0, 2], [1, 3]]
    assert [arr.shape for _, arr in stacked] == [(2, 300, 400, 3), (2, 200, 100, 3)]
    single, _ = stack_by_shape([c], (320, 320))
    assert np.shares_memory(single[0][1], c)
    alone, _ = stack_by_shape([flipped], (320, 320))
    assert alone[0][1].flags.c_contiguous and np.array_equal(alone[0][1][0], flipped)
    whole, whole_metas = letterbox_batch_torch([a, c, b, flipped], (320, 320), "cpu")
    assert metas == whole_metas
    assert torch.equal(letterbox_stacked_torch(stacked, 4, (320, 320), "cpu"), whole)
    ref, _ = letterbox_batch([a, c, b, np.ascontiguousarray(flipped)], (320, 320))
    assert int((whole.int() - torch.from_numpy(ref).int()).abs().max()) <= 1
    one, _ = letterbox_batch_torch([flipped], (320, 320), "cpu")
    assert torch.equal(one[0], whole[3])
    frozen = c.copy()
    frozen.flags.writeable = False  # e.g. np.asarray of a PIL image: torch.from_numpy would warn
    held, _ = stack_by_shape([frozen], (320, 320))
    assert not np.shares_memory(held[0][1], frozen) and held[0][1].flags.writeable


def test_device_preprocess_splits_host_and_device_work(small):
    """With the letterbox on the device the host part returns stacked host arrays (no tensor on
    the device yet) and the two halves give what `preprocess` gives."""
    backend = TorchBackend(small, SpeedOptions(preprocess="device"))
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (120, 90, 3), dtype=np.uint8) for _ in range(3)]
    host = backend.preprocess_host(imgs, (128, 128))
    (stacked, metas), count, size, buf = host
    assert buf is None and count == 3 and size == (128, 128) and all(isinstance(arr, np.ndarray) for _, arr in stacked)
    x, metas2 = backend.preprocess_device(host)
    y, metas3 = backend.preprocess(imgs, (128, 128))
    assert metas == metas2 == metas3 and torch.equal(x, y) and x.shape == (3, 3, 128, 128)


def test_prepared_copy_is_cached_until_the_weights_change(small):
    opt = SpeedOptions(fuse=True)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    a = prepare_network(small, opt)
    assert prepare_network(small, opt) is a
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in a.module.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in small.modules())  # the model untouched
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        small.bbox_head.rtm_cls[0].bias.add_(0.5)  # an optimizer step would do the same
    b = prepare_network(small, opt)
    assert b is not a
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(b(x)[0][0], small(x)[0][0], rtol=1e-4, atol=1e-4)
        small.bbox_head.rtm_cls[0].bias.sub_(0.5)
    assert "_speed_cache" not in small.state_dict()


def test_fused_predict_matches_the_fixture_like_the_default(model):
    for case in ("square", "portrait", "large"):
        fix = load_fixture(DET_FIX / f"predict_{case}.pth")
        d = model.predict(fix["image_bgr"].numpy(), fuse=True)
        assert match_detections(d.boxes, d.scores, d.labels, fix["bboxes"], fix["scores"], fix["labels"]) == 0


def test_detector_fuses_its_own_model_by_default(model):
    det = Detector(need(DET_FIX / "weights.pth"))
    net = det.backend.net
    assert net.module is det.backend.model  # loaded from a path: prepared in place, no copy
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.module.modules())
    plain = Detector(DET_FIX / "weights.pth", fuse=False)
    assert plain.backend.net is plain.backend.model
    given = Detector("model", model=model)  # a caller's model is never changed
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert given.backend.net.module is not model


@pytest.mark.parametrize("kw, device, nhwc", [
    (dict(), "cpu", False),                      # the exact path: the model itself
    (dict(fuse=True), "cpu", True),              # the Detector's / CLI's default on the CPU
    (dict(fuse=True, channels_last=False), "cpu", False),
    (dict(channels_last=True), "cpu", True),
    (dict(fuse=True, half="bf16"), "cpu", False),  # measured in float32 only
    (dict(fuse=True), "cuda", False),            # fp32 on CUDA: not measured faster
    (dict(half=True), "cuda", True),
    (dict(half=True, channels_last=False), "cuda", False),
])
def test_channels_last_default(kw, device, nhwc):
    assert SpeedOptions(**kw).use_channels_last(torch.device(device)) is nhwc


def test_detector_on_the_cpu_runs_channels_last(model):
    """Fused and NHWC (oneDNN's faster convolutions) by default, with the fixtures' detections
    at the parity tolerance; `channels_last=False` keeps NCHW."""
    det = Detector(need(DET_FIX / "weights.pth"))
    assert det.backend.net.channels_last
    conv = det.backend.model.backbone.stem[0].conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for case in ("square", "portrait", "large"):
        fix = load_fixture(DET_FIX / f"predict_{case}.pth")
        d = det.predict(fix["image_bgr"].numpy())
        assert match_detections(d.boxes, d.scores, d.labels, fix["bboxes"], fix["scores"], fix["labels"]) == 0
    assert not Detector(DET_FIX / "weights.pth", channels_last=False).backend.net.channels_last


def test_instance_masks_through_the_cpu_default_match_the_fixture():
    from helpers import INS_FIX, mask_ious
    det = Detector(need(INS_FIX / "weights.pth"))
    assert det.backend.net.channels_last
    for case in ("square", "portrait", "large"):
        fix = load_fixture(INS_FIX / f"predict_{case}.pth")
        tc = fix["test_cfg"]  # the fixture's settings (100 per image)
        d = det.predict(fix["image_bgr"].numpy(), score_thr=tc["score_thr"], nms_pre=tc["nms_pre"],
                        nms_iou=tc["nms"]["iou_threshold"], max_per_img=tc["max_per_img"],
                        mask_thr=tc["mask_thr_binary"])
        assert len(d) == len(fix["scores"])
        assert match_detections(d.boxes, d.scores, d.labels, fix["bboxes"], fix["scores"], fix["labels"]) == 0
        assert min(mask_ious(d, fix)) >= 0.99


@pytest.mark.parametrize("name", ["rtmdet-tiny", "rtmdet-ins-tiny", "rtmdet-r-tiny"])
def test_channels_last_network_equals_the_plain_one(name):
    """Every family's head outputs through the NHWC network, against the model itself."""
    m = input_sensitive(rtmdet.create(name, num_classes=3))
    x = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref, got = m(x), prepare_network(m, SpeedOptions(channels_last=True))(x)
    flat = lambda o: [t for t in (o if isinstance(o, (list, tuple)) else [o]) for t in
                      (t if isinstance(t, (list, tuple)) else [t])]
    pairs = list(zip(flat(ref), flat(got)))
    assert pairs and all(a.shape == b.shape for a, b in pairs)
    # float32 rounding of a reordered sum (outputs up to ~200 here; BN fusion drifts as much)
    scale = max(float(a.abs().max()) for a, _ in pairs)
    assert max(float((a - b).abs().max()) for a, b in pairs) <= 1e-4 * scale


def test_device_preprocess_detections_stay_close(model):
    fix = load_fixture(DET_FIX / "predict_portrait.pth")  # 700x500 -> resized
    exact = model.predict(fix["image_bgr"].numpy())
    dev = model.predict(fix["image_bgr"].numpy(), preprocess="device")
    # a grey level of rounding moves scores by ~1e-4: the same detections at a looser tolerance
    assert match_detections(dev.boxes, dev.scores, dev.labels, exact.boxes, exact.scores, exact.labels,
                            score_tol=2e-3, box_tol=0.5) <= len(exact) // 20


def test_bf16_runs_on_cpu_with_float32_results(small):
    img = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    d = small.predict(img, imgsz=64, half="bf16", score_thr=0.0)
    assert d.boxes.dtype == torch.float32 and d.scores.dtype == torch.float32
    assert small.mean.dtype == torch.float32 and next(small.parameters()).dtype == torch.float32


def test_graph_backends_refuse_torch_only_options(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match="rtmdet export --half"):
        Detector(f, half=True)
    with pytest.raises(ValueError, match="preprocess apply to PyTorch"):
        Detector(f, preprocess="device")


def test_onnxruntime_threads_stop_spinning_between_runs(small, tmp_path):
    pytest.importorskip("onnxruntime")
    from rtmdet.deploy.onnx import export_onnx
    export_onnx(small, tmp_path / "m.onnx", imgsz=64)
    opts = Detector(tmp_path / "m.onnx").backend.session.get_session_options()
    assert opts.get_session_config_entry("session.force_spinning_stop") == "1"


def test_cli_speed_flags_reach_the_options():
    from rtmdet.cli import build_parser
    from rtmdet.cli.common import speed_kwargs
    args = build_parser().parse_args(["predict", "x.jpg", "--model", "rtmdet-tiny", "--half", "--no-fuse",
                                      "--device-preprocess"])
    assert speed_kwargs(args) == dict(fuse=False, half="fp16", compile=False, cuda_graph=False,
                                      preprocess="device")
    args = build_parser().parse_args(["val", "--data", "d", "--model", "rtmdet-tiny", "--half", "bf16",
                                      "--cuda-graph"])
    assert speed_kwargs(args)["half"] == "bf16" and speed_kwargs(args)["cuda_graph"] and speed_kwargs(args)["fuse"]


def input_sensitive(m):
    """A fresh model's activations shrink layer by layer (the reference init, BatchNorm at unit
    statistics), so its outputs hardly depend on its input; BatchNorm statistics taken from one
    batch keep every layer at unit scale, so they do."""
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 1.0  # the running statistics become the batch's
    m.train()
    with torch.no_grad():
        m(torch.rand(4, 3, 128, 160, generator=torch.Generator().manual_seed(9)))
    return m.eval()


@pytest.mark.parametrize("name", ["rtmdet-tiny", "rtmdet-ins-tiny", "rtmdet-r-tiny"])
def test_input_sensitive_make_outputs_depend_on_the_input(name):
    """The precondition of the CUDA-graph test below, checked where it runs everywhere."""
    b = TorchBackend(input_sensitive(rtmdet.create(name, num_classes=3)), SpeedOptions(fuse=True))
    o = [b.infer(torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(s))) for s in (0, 1)]
    assert float((o[0]["scores"] - o[1]["scores"]).abs().max()) > 1e-2


@cuda
@pytest.mark.parametrize("name", ["rtmdet-tiny", "rtmdet-ins-tiny", "rtmdet-r-tiny"])
def test_cuda_graph_replays_network_and_decoding(name):
    """Each family's network + decoding captured once and replayed on new inputs gives what the
    same prepared network computes eagerly (a stale input or output buffer would not)."""
    m = input_sensitive(rtmdet.create(name, num_classes=3)).cuda().eval()
    eager = TorchBackend(m, SpeedOptions(fuse=True, half=True))
    graphed = TorchBackend(m, SpeedOptions(fuse=True, half=True, cuda_graph=True))
    prev = None
    for seed in (0, 1, 2):
        x = torch.rand(2, 3, 128, 160, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        a, b = eager.infer(x), graphed.infer(x)
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], torch.Tensor):
                torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-3)
        if prev is not None:  # the inputs differ in the outputs, so a stale replay would fail above
            assert float((a["scores"] - prev).abs().max()) > 1e-2
        prev = a["scores"]
    assert len(graphed.net.graphs) == 0 and len(graphed._infer.graphs) == 1  # one shape, one graph


@cuda
def test_cuda_device_letterbox_matches_cpu_torch():
    img = np.random.default_rng(3).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    cpu, _ = letterbox_batch_torch([img], (640, 640), "cpu")
    gpu, _ = letterbox_batch_torch([img], (640, 640), "cuda")
    assert int((gpu.cpu().int() - cpu.int()).abs().max()) <= 1


@cuda
def test_cuda_graph_backend_keeps_the_exact_detections():
    """`cuda_graph=True` without other options: the network and the decoding replayed from
    graphs; the fixture detections of the exact path (TF32 off: the comparison is with fp32
    convolutions), on the capture and on a replay."""
    from rtmdet.inference.loop import run_inference
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
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


class _Recorder:
    """A backend that logs the order of network runs (queued without waiting: the loop never
    waits for the network itself, its post-processing reads in stream order) and
    post-processing; `infer`, which waits, fails."""

    def __init__(self, backend, log):
        self.backend, self.log = backend, log

    def __getattr__(self, name):
        return getattr(self.backend, name)

    overlap_device = "side"  # any non-None value turns the overlap on

    def infer_async(self, x):
        self.log.append(("infer", len(x)))
        return self.backend.infer(x)

    def infer(self, x):
        raise AssertionError("the loop waited for the network")

    def postprocess(self, outs, metas, cfg):
        self.log.append(("post", len(metas)))
        return self.backend.postprocess(outs, metas, cfg)


class _FakeSide:
    """`SideStream` without CUDA: the same calls, run in place."""

    def __init__(self, device):
        self.marks = 0

    def mark(self):
        self.marks += 1
        return self.marks

    def run(self, backend, outs, metas, mark, cfg):
        return backend.postprocess(outs, metas, cfg)


def test_overlap_queues_the_next_network_before_post_processing(small, monkeypatch):
    """With a side stream, batch i+1's network is queued before batch i is post-processed
    (infer 2, infer 2, post 2, infer 1, post 2, post 1 for 5 images in batches of 2), every
    batch once, and the detections are those of one batch at a time, in input order."""
    from rtmdet.deploy.bench import bench_images
    from rtmdet.inference import loop
    images = bench_images(5, shape=(96, 128))
    plain = loop.run_inference(TorchBackend(small), images, batch_size=2, prefetch=False, imgsz=128)
    monkeypatch.setattr(loop, "SideStream", _FakeSide)
    log: list = []
    got = loop.run_inference(_Recorder(TorchBackend(small), log), images, batch_size=2, prefetch=True,
                             side_stream=True, imgsz=128)
    assert log == [("infer", 2), ("infer", 2), ("post", 2), ("infer", 1), ("post", 2), ("post", 1)]
    assert len(got) == len(plain) == 5
    for a, b in zip(got, plain):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
    # not asked for, without reading ahead, or with one batch: no overlap - each batch is
    # post-processed right after its own network, before the next one is queued
    for kw in (dict(prefetch=True), dict(prefetch=False, side_stream=True)):
        log.clear()
        loop.run_inference(_Recorder(TorchBackend(small), log), images, batch_size=2, imgsz=128, **kw)
        assert log == [("infer", 2), ("post", 2), ("infer", 2), ("post", 2), ("infer", 1), ("post", 1)]
    log.clear()
    loop.run_inference(_Recorder(TorchBackend(small), log), images[:2], batch_size=2, prefetch=True,
                       side_stream=True, imgsz=128)
    assert log == [("infer", 2), ("post", 2)]


def test_cpu_backends_do_not_overlap(small):
    assert TorchBackend(small).overlap_device is None


@cuda
@pytest.mark.parametrize("name", ["rtmdet-tiny", "rtmdet-ins-tiny"])
@pytest.mark.parametrize("fast", [False, True])
def test_cuda_side_stream_post_keeps_every_detection(name, fast):
    """On CUDA with `side_stream=True`, `run_inference` post-processes beside the next batch's network:
    the detections (and masks) equal those of one batch at a time, bit for bit, over batches of
    two shapes (the last batch is smaller), with the worst case of candidates (spread head)."""
    from unittest import mock
    from rtmdet.deploy.bench import bench_images, spread_head
    from rtmdet.inference import loop
    torch.manual_seed(0)
    model = spread_head(rtmdet.create(name).cuda().eval())
    options = SpeedOptions(fuse=True, half=True, cuda_graph=True, preprocess="device") if fast else None
    backend = TorchBackend(model, options)
    images = bench_images(7, shape=(240, 320))
    with mock.patch.object(loop.SideStream, "run", autospec=True, side_effect=loop.SideStream.run) as run:
        got = loop.run_inference(backend, images, batch_size=3, side_stream=True)
    assert run.call_count == 3
    with torch.inference_mode():
        ref = [d for i in range(0, 7, 3) for d in loop.run_batch(backend, images[i:i + 3], model.test_cfg)]
    assert len(got) == len(ref) == 7
    for a, b in zip(got, ref):
        assert len(a) > 0
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
        assert (a.masks is None) == (b.masks is None) and (a.masks is None or torch.equal(a.masks, b.masks))
