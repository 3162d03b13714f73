"""OpenVINO IR export and backend: parity with PyTorch (raw graph outputs and end-to-end
detections / masks), static and dynamic shapes, with and without in-graph NMS. 320x320 exports."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import infer_arrays, DET_FIX, INS_FIX, load_fixture, match_detections, need, pair_rows

ov = pytest.importorskip("openvino")
pytest.importorskip("onnx")

import rtmdet  # noqa: E402
from rtmdet.config import TestConfig as InsTestConfig  # noqa: E402
from rtmdet.data.letterbox import letterbox_batch  # noqa: E402
from rtmdet.inference import BackendUnavailable, Detector  # noqa: E402
from rtmdet.deploy.onnx import ExportModule, export_onnx, read_metadata  # noqa: E402
from rtmdet.deploy.openvino import export_openvino
from rtmdet.inference.openvino_backend import read_ov_metadata  # noqa: E402

NAMES = ("square", "portrait", "large")
SIZE = 320


def _images(fix_dir):
    return [load_fixture(fix_dir / f"predict_{n}.pth")["image_bgr"].numpy() for n in NAMES]


def _wrapper(model, nms):
    tc = model.test_cfg
    return ExportModule(model, nms=nms, score_thr=tc.score_thr, nms_iou=tc.nms_iou,
                        max_det=tc.max_per_img, nms_pre=tc.nms_pre,
                        min_bbox_size=tc.min_bbox_size).eval()


def _torch_graph(model, x, nms):
    with torch.no_grad():
        return [t.numpy() for t in _wrapper(model, nms)(torch.from_numpy(x))]


# ------------------------------------------------------------------------------- detection
@pytest.fixture(scope="module")
def det_model():
    return rtmdet.load(need(DET_FIX / "weights.pth"))


@pytest.fixture(scope="module")
def det_images():
    return _images(DET_FIX)


@pytest.fixture(scope="module")
def det_ref(det_model, det_images):
    """PyTorch's detections at 320 (the reference post-processing, test_cfg defaults)."""
    return det_model.predict(det_images, imgsz=SIZE)


@pytest.fixture(scope="module")
def det_ir(det_model, tmp_path_factory):
    """{static, dynamic} x {no NMS, NMS} IRs. Static ones go through an ONNX file, dynamic ones
    straight from the model; the dynamic ones are traced at 256x256, so running them at 320 and
    at batch 2-3 exercises the dynamic axes."""
    d = tmp_path_factory.mktemp("ov_det")
    files = {}
    for nms in (False, True):
        onnx_path = export_onnx(det_model, d / f"static_{nms}.onnx", imgsz=SIZE, nms=nms)
        files[("static", nms)] = export_openvino(onnx_path, d / f"static_{nms}.xml")
        files[("dynamic", nms)] = export_openvino(det_model, d / f"dynamic_{nms}.xml", imgsz=256,
                                                  dynamic=True, nms=nms)
    return files


def test_ir_metadata_shapes_and_fp32(det_ir):
    core = ov.Core()
    for (kind, nms), xml in det_ir.items():
        assert xml.with_suffix(".bin").is_file()
        model = core.read_model(str(xml))
        meta = read_ov_metadata(model)
        assert meta == read_ov_metadata(xml)
        assert meta["nms"] == nms and meta["dynamic"] == (kind == "dynamic")
        assert len(meta["class_names"]) == 80 and meta["openvino_half"] is False
        shape = model.inputs[0].get_partial_shape()
        assert shape.is_static == (kind == "static")
        if kind == "static":
            assert list(shape.to_shape()) == [1, 3, SIZE, SIZE]
        assert len(model.outputs) == len(meta["outputs"]) == (4 if nms else 2)
        # fp32: no float16 weights (save_model's default f16 compression is off)
        consts = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
        assert not any(c.get_element_type() == ov.Type.f16 for c in consts)
    static_onnx = det_ir[("static", False)].with_suffix(".onnx")
    assert read_ov_metadata(det_ir[("static", False)]) == {**read_metadata(static_onnx),
                                                           "openvino_half": False}


def test_half_ir(det_ir, tmp_path):
    src = det_ir[("static", False)].with_suffix(".onnx")
    xml = export_openvino(src, tmp_path / "half.xml", half=True)
    full = det_ir[("static", False)].with_suffix(".bin").stat().st_size
    assert xml.with_suffix(".bin").stat().st_size < 0.6 * full
    assert read_ov_metadata(xml)["openvino_half"] is True
    det = Detector(xml)
    x = letterbox_batch([np.full((200, 300, 3), 90, np.uint8)], (SIZE, SIZE))[0].astype(np.float32)
    ref = infer_arrays(Detector(det_ir[("static", False)]), x)
    out = infer_arrays(det, x)
    np.testing.assert_allclose(out[1], ref[1], atol=2e-3)  # f16 weights, f32 compute


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_raw_outputs_match_torch(det_model, det_images, det_ir, kind):
    """Decoded boxes and sigmoid scores equal the PyTorch graph's (dynamic: batch 2)."""
    names = 1 if kind == "static" else 2
    x = letterbox_batch(det_images[:names], (SIZE, SIZE))[0].astype(np.float32)
    det = Detector(det_ir[(kind, False)])
    assert det.backend_name == "openvino" and det.backend.output_names == ["boxes", "scores"]
    boxes, scores = infer_arrays(det, x)
    ref_boxes, ref_scores = _torch_graph(det_model, x, nms=False)
    assert boxes.shape == (names, 2100, 4) and scores.shape == (names, 2100, 80)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4, rtol=0)
    # pixel coordinates up to 320: float32 arithmetic in another order, 1e-4 relative
    np.testing.assert_allclose(boxes, ref_boxes, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_nms_outputs_match_torch(det_model, det_images, det_ir, kind):
    """OpenVINO runs ONNX NonMaxSuppression: the same kept rows as the PyTorch graph."""
    names = 1 if kind == "static" else 2
    x = letterbox_batch(det_images[1:1 + names], (SIZE, SIZE))[0].astype(np.float32)
    num_dets, boxes, scores, labels = infer_arrays(Detector(det_ir[(kind, True)]), x)
    ref = _torch_graph(det_model, x, nms=True)
    assert num_dets.dtype == np.int32 and labels.dtype == np.int32
    np.testing.assert_array_equal(num_dets, ref[0])
    for i in range(names):
        n = int(num_dets[i, 0])
        assert n > 0 and (labels[i, n:] == -1).all()
        pair_rows(boxes[i, :n], scores[i, :n], labels[i, :n], ref[1][i, :n], ref[2][i, :n],
                   ref[3][i, :n])


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("nms", [False, True], ids=["no_nms", "nms"])
def test_detector_end_to_end(det_images, det_ref, det_ir, kind, nms):
    """Detector over OpenVINO gives PyTorch's detections (static: one image per run; dynamic:
    one batch of 3 at 320, exported at 256)."""
    det = Detector(det_ir[(kind, nms)])
    dets = det.predict(det_images, batch_size=1 if kind == "static" else 3, imgsz=SIZE)
    for d, r, img in zip(dets, det_ref, det_images):
        assert d.image_shape == img.shape[:2]
        assert len(d) == len(r) > 0
        assert match_detections(d.boxes, d.scores, d.labels, r.boxes, r.scores, r.labels) == 0


def test_device_and_missing_file(det_ir, tmp_path):
    with pytest.raises(BackendUnavailable, match="CUDA"):
        Detector(det_ir[("static", False)], device="cuda")
    with pytest.raises(FileNotFoundError):
        Detector(tmp_path / "nope.xml")


# ------------------------------------------------------------------------------- instance seg
@pytest.fixture(scope="module")
def ins_model():
    """The ins fixture model with the fixture's test_cfg (score_thr 0.01: random weights still
    give 100 instances)."""
    m = rtmdet.load(need(INS_FIX / "weights.pth"))
    tc = load_fixture(INS_FIX / "predict_square.pth")["test_cfg"]
    m.test_cfg = InsTestConfig(score_thr=tc["score_thr"], nms_pre=tc["nms_pre"],
                               nms_iou=tc["nms"]["iou_threshold"], max_per_img=tc["max_per_img"],
                               min_bbox_size=tc["min_bbox_size"], mask_thr=tc["mask_thr_binary"])
    return m


@pytest.fixture(scope="module")
def ins_ir(ins_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("ov_ins")
    return {("static", False): export_openvino(ins_model, d / "static.xml", imgsz=SIZE),
            ("dynamic", True): export_openvino(ins_model, d / "dynamic_nms.xml", imgsz=256,
                                               dynamic=True, nms=True)}


def test_ins_raw_outputs_match_torch(ins_model, ins_images, ins_ir):
    x = letterbox_batch(ins_images[1:2], (SIZE, SIZE))[0].astype(np.float32)
    det = Detector(ins_ir[("static", False)])
    outs = infer_arrays(det, x)
    assert det.backend.output_names == ["boxes", "scores", "kernels", "mask_feat"]
    ref = _torch_graph(ins_model, x, nms=False)
    assert [o.shape for o in outs] == [(1, 2100, 4), (1, 2100, 80), (1, 2100, 169), (1, 8, 40, 40)]
    np.testing.assert_allclose(outs[0], ref[0], atol=1e-3, rtol=1e-4)
    for o, r in zip(outs[1:], ref[1:]):
        np.testing.assert_allclose(o, r, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def ins_images():
    return _images(INS_FIX)[:2]  # square and portrait: full-resolution masks of "large" are slow


@pytest.fixture(scope="module")
def ins_ref(ins_model, ins_images):
    return ins_model.predict(ins_images, imgsz=SIZE)


@pytest.mark.parametrize("kind,nms", [("static", False), ("dynamic", True)],
                         ids=["static-no_nms", "dynamic-nms"])
def test_ins_detector_end_to_end(ins_images, ins_ref, ins_ir, kind, nms):
    """Detections and masks (IoU >= 0.99 per instance) equal PyTorch's."""
    dets = Detector(ins_ir[(kind, nms)]).predict(ins_images,
                                                 batch_size=1 if kind == "static" else 2,
                                                 imgsz=SIZE)
    for d, r in zip(dets, ins_ref):
        assert len(d) == len(r) == 100
        assert match_detections(d.boxes, d.scores, d.labels, r.boxes, r.scores, r.labels) == 0
        assert d.masks.shape == r.masks.shape
        # pair instances as match_detections does, then compare their masks
        used = np.zeros(len(d), bool)
        rb, rs, rl = r.boxes.numpy(), r.scores.numpy(), r.labels.numpy()
        db, ds, dl = d.boxes.numpy(), d.scores.numpy(), d.labels.numpy()
        for i in range(len(r)):
            cost = np.abs(ds - rs[i]) * 1e3 + np.abs(db - rb[i]).max(1)
            cost[(dl != rl[i]) | used] = np.inf
            j = int(np.argmin(cost))
            used[j] = True
            a, b = d.masks[j], r.masks[i]
            union = int((a | b).sum())
            assert union == 0 or int((a & b).sum()) / union >= 0.99


# ------------------------------------------------------------------------------- CLI
def test_cli_export_openvino(tmp_path, capsys):
    from rtmdet.api import checkpoint_meta
    from rtmdet.cli import main
    m = rtmdet.create("rtmdet-tiny")
    ckpt = tmp_path / "tiny.pth"
    torch.save({"meta": checkpoint_meta(m), "state_dict": m.state_dict()}, ckpt)
    out = tmp_path / "tiny.xml"
    assert main(["export", "--weights", str(ckpt), "--format", "openvino", "--imgsz", "128",
                 "--nms", "--output", str(out)]) == 0
    assert out.is_file() and (tmp_path / "tiny.onnx").is_file()
    meta = read_ov_metadata(out)
    assert meta["nms"] and meta["imgsz"] == [128, 128]
    d = Detector(out).predict(np.full((100, 150, 3), 114, np.uint8))
    assert d.image_shape == (100, 150)
    capsys.readouterr()
    assert main(["export", "--weights", str(ckpt), "--format", "openvino",
                 "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert ".xml" in err and "\n" not in err
