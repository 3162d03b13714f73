"""ONNX export and the Detector backends: parity with PyTorch and with the reference fixtures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import DET_FIX, load_fixture, match_detections, need, run_onnx, save_random_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import rtmdet  # noqa: E402
from rtmdet.data.letterbox import letterbox_batch  # noqa: E402
from rtmdet.inference import BackendUnavailable, Detector  # noqa: E402
from rtmdet.deploy.onnx import ExportModule, export_onnx, read_metadata  # noqa: E402

NAMES = ("square", "portrait", "large")


@pytest.fixture(scope="module")
def model():
    return rtmdet.load(need(DET_FIX / "weights.pth"))


@pytest.fixture(scope="module")
def fixtures():
    return {n: load_fixture(DET_FIX / f"predict_{n}.pth") for n in NAMES}


@pytest.fixture(scope="module")
def onnx_files(model, tmp_path_factory):
    """Four exports shared by all tests: {static, dynamic} x {no NMS, NMS}. The dynamic ones are
    traced at 128x128 batch 1, so running them at 640 / batch 2 or 3 exercises dynamic axes."""
    d = tmp_path_factory.mktemp("onnx")
    files = {}
    for nms in (False, True):
        files[("static", nms)] = export_onnx(model, d / f"static_{nms}.onnx", imgsz=640, nms=nms)
        files[("dynamic", nms)] = export_onnx(model, d / f"dynamic_{nms}.onnx", imgsz=128, batch=1,
                                              dynamic=True, nms=nms)
    return files


def _letterboxed(fixtures, names, size=(640, 640)):
    return letterbox_batch([fixtures[n]["image_bgr"].numpy() for n in names], size)[0].astype(np.float32)


def _run(path, x):
    return run_onnx(path, x)


def test_checker_and_io(onnx_files):
    for (kind, nms), path in onnx_files.items():
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert [i.name for i in proto.graph.input] == ["images"]
        outs = [o.name for o in proto.graph.output]
        assert outs == (["num_dets", "boxes", "scores", "labels"] if nms else ["boxes", "scores"])
        meta = read_metadata(path)
        assert meta["nms"] == nms and meta["dynamic"] == (kind == "dynamic")
        assert len(meta["class_names"]) == 80


def test_raw_outputs_match_torch(model, fixtures, onnx_files):
    """ONNX Runtime's decoded boxes and sigmoid scores equal the torch graph's (within 1e-4)."""
    x = _letterboxed(fixtures, ["large"])
    boxes, scores = _run(onnx_files[("static", False)], x)
    with torch.no_grad():
        ref_boxes, ref_scores = ExportModule(model)(torch.from_numpy(x))
        cls, reg = model(model.normalize(torch.from_numpy(x)))
    assert boxes.shape == (1, 8400, 4) and scores.shape == (1, 8400, 80)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0)
    # boxes are in pixels (up to 640): float32 resolution there is ~6e-5, so 1e-4 relative.
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-4, rtol=1e-4)
    # the graph's scores are exactly sigmoid(head logits) in the reference prior order
    flat = torch.cat([c.permute(0, 2, 3, 1).reshape(1, -1, 80) for c in cls], 1).sigmoid()
    np.testing.assert_allclose(scores, flat.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("size,names", [((384, 640), ["large", "square"]), ((640, 640), ["portrait"])])
def test_dynamic_sizes_and_batches(model, fixtures, onnx_files, size, names):
    x = _letterboxed(fixtures, names, size)
    boxes, scores = _run(onnx_files[("dynamic", False)], x)
    with torch.no_grad():
        ref_boxes, ref_scores = ExportModule(model)(torch.from_numpy(x))
    n = sum((size[0] // s) * (size[1] // s) for s in (8, 16, 32))
    assert boxes.shape == (len(names), n, 4) and scores.shape == (len(names), n, 80)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-4, rtol=1e-4)
    num_dets, nboxes, nscores, labels = _run(onnx_files[("dynamic", True)], x)
    assert num_dets.shape == (len(names), 1) and nboxes.shape == (len(names), 300, 4)
    assert nscores.shape == labels.shape == (len(names), 300)


def _check(dets, fixtures, names):
    for d, n in zip(dets, names):
        f = fixtures[n]
        assert d.image_shape == tuple(f["image_bgr"].shape[:2])
        assert len(d) == len(f["scores"]), n
        assert match_detections(d.boxes, d.scores, d.labels, f["bboxes"], f["scores"],
                                f["labels"]) == 0, n


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("nms", [False, True], ids=["no_nms", "nms"])
def test_detector_end_to_end(fixtures, onnx_files, kind, nms):
    """Detector over ONNX Runtime gives the reference detections on the fixture images."""
    det = Detector(onnx_files[(kind, nms)])
    assert det.backend_name == "onnxruntime"
    # static batch 1: three separate runs; dynamic: one batch at 640 (exported at 1, 128).
    # Without in-graph NMS the reference NMS over ~60k random-weight candidates takes seconds
    # per image, so the dynamic no-NMS case uses a higher score_thr (the reference detections
    # above it are exactly what the reference returns with that threshold).
    images = [fixtures[n]["image_bgr"].numpy() for n in NAMES]
    if kind == "static" or nms:
        _check(det.predict(images, batch_size=1 if kind == "static" else 3), fixtures, NAMES)
        return
    for d, n in zip(det.predict(images, batch_size=3, score_thr=0.015), NAMES):
        f = fixtures[n]
        keep = f["scores"] > 0.015
        assert len(d) == int(keep.sum()) > 0
        assert match_detections(d.boxes, d.scores, d.labels, f["bboxes"][keep],
                                f["scores"][keep], f["labels"][keep]) == 0


def test_detector_nms_graph_knobs(fixtures, onnx_files):
    det = Detector(onnx_files[("static", True)])
    img = fixtures["portrait"]["image_bgr"].numpy()
    d = det.predict(img, score_thr=0.0155, max_per_img=50)
    ref = fixtures["portrait"]
    keep = ref["scores"] > 0.0155
    assert len(d) == min(50, int(keep.sum()))
    assert match_detections(d.boxes, d.scores, d.labels, ref["bboxes"][keep][:50],
                            ref["scores"][keep][:50], ref["labels"][keep][:50]) == 0
    with pytest.raises(ValueError, match="re-export"):
        det.predict(img, nms_iou=0.5)
    with pytest.raises(ValueError, match="exported for 640x640"):
        det.predict(img, imgsz=320)


def test_detector_torch_backend(model, fixtures):
    det = Detector(DET_FIX / "weights.pth")
    assert det.backend_name == "torch"
    f = fixtures["square"]
    d = det.predict(f["image_bgr"].numpy(), score_thr=0.03)  # a higher threshold: faster NMS
    keep = f["scores"] > 0.03
    assert 0 < len(d) == int(keep.sum())
    assert match_detections(d.boxes, d.scores, d.labels, f["bboxes"][keep], f["scores"][keep],
                            f["labels"][keep]) == 0


def test_tensorrt_missing_is_one_line(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed; the missing-package path is not reachable")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable) as e:
        Detector(tmp_path / "model.engine")
    assert "TensorRT" in str(e.value) and "\n" not in str(e.value)


def test_tensorrt_parity(fixtures, onnx_files, tmp_path):
    pytest.importorskip("tensorrt", reason="tensorrt is not installed")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from rtmdet.deploy.trt import build_engine
    for nms in (False, True):
        det = Detector(build_engine(onnx_files[("static", nms)], tmp_path / f"m{nms}.engine"),
                       device="cuda")
        for n in NAMES:
            d = det.predict(fixtures[n]["image_bgr"].numpy())
            f = fixtures[n]
            # GPU kernels differ slightly from the CPU reference: allow a few borderline swaps
            assert match_detections(d.boxes, d.scores, d.labels, f["bboxes"], f["scores"],
                                    f["labels"], score_tol=1e-3, box_tol=0.1) <= 3


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def test_cli_export(random_ckpt, tmp_path, capsys):
    from rtmdet.cli import main
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--weights", str(random_ckpt), "--imgsz", "128", "--nms", "--simplify", "--dynamic",
                 "--output", str(out)]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert read_metadata(out)["imgsz"] == [128, 128]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        capsys.readouterr()
        assert main(["export", "--weights", str(random_ckpt), "--format", "engine"]) == 2
        err = capsys.readouterr().err.strip()
        assert "TensorRT" in err and "\n" not in err
    assert main(["export", "--weights", str(tmp_path / "nope.pth")]) == 2


def test_cli_bench(random_ckpt, capsys):
    from rtmdet.cli import main
    assert main(["bench", "--weights", str(random_ckpt), "--backend", "all", "--imgsz", "128",
                 "--runs", "1", "--warmup", "0", "--nms"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "onnxruntime" in out and "tensorrt" in out
    trt_row = [line for line in out.splitlines() if line.startswith("tensorrt")]
    assert len(trt_row) == 1
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "skipped:" in trt_row[0]
