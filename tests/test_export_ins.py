"""ONNX export of RTMDet-Ins: mask outputs, parity with PyTorch and with the reference masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import INS_FIX, load_fixture, mask_ious, match_detections, need, pair_rows, run_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import rtmdet  # noqa: E402
from rtmdet.config import TestConfig as InsTestConfig  # noqa: E402
from rtmdet.data.letterbox import letterbox_batch  # noqa: E402
from rtmdet.inference import Detector  # noqa: E402
from rtmdet.ops.graph_nms import graph_multiclass_nms
from rtmdet.deploy.onnx import ExportModule, export_onnx, read_metadata  # noqa: E402
from rtmdet.ops.boxes import grid_priors  # noqa: E402

NAMES = ("square", "portrait", "large")


@pytest.fixture(scope="module")
def fixtures():
    return {n: load_fixture(INS_FIX / f"predict_{n}.pth") for n in NAMES}


@pytest.fixture(scope="module")
def model(fixtures):
    """The ins fixture model with the fixture's test_cfg (score_thr 0.01) as its defaults, so the
    exports bake in (and the Detectors default to) exactly the reference settings."""
    m = rtmdet.load(need(INS_FIX / "weights.pth"))
    tc = fixtures["square"]["test_cfg"]
    m.test_cfg = InsTestConfig(score_thr=tc["score_thr"], nms_pre=tc["nms_pre"],
                               nms_iou=tc["nms"]["iou_threshold"], max_per_img=tc["max_per_img"],
                               min_bbox_size=tc["min_bbox_size"], mask_thr=tc["mask_thr_binary"])
    return m


@pytest.fixture(scope="module")
def onnx_files(model, tmp_path_factory):
    """Static 640 exports with and without NMS, and one dynamic NMS export traced at 128x128
    batch 1 (run at 640 and batch 2-3, which exercises the dynamic axes of the mask branch)."""
    d = tmp_path_factory.mktemp("onnx_ins")
    return {("static", False): export_onnx(model, d / "static_nonms.onnx", imgsz=640),
            ("static", True): export_onnx(model, d / "static_nms.onnx", imgsz=640, nms=True),
            ("dynamic", True): export_onnx(model, d / "dynamic_nms.onnx", imgsz=128, batch=1,
                                           dynamic=True, nms=True)}


def _letterboxed(fixtures, names, size=(640, 640)):
    return letterbox_batch([fixtures[n]["image_bgr"].numpy() for n in names], size)[0].astype(np.float32)


def _run(path, x):
    return run_onnx(path, x)


def _torch_graph(model, x, nms):
    tc = model.test_cfg
    wrapper = ExportModule(model, nms=nms, score_thr=tc.score_thr, nms_iou=tc.nms_iou,
                           max_det=tc.max_per_img, nms_pre=tc.nms_pre,
                           min_bbox_size=tc.min_bbox_size).eval()
    with torch.no_grad():
        return [t.numpy() for t in wrapper(torch.from_numpy(x))]


def test_io_and_metadata(onnx_files):
    for (kind, nms), path in onnx_files.items():
        proto = onnx.load(str(path))
        outs = [o.name for o in proto.graph.output]
        assert outs == (["num_dets", "boxes", "scores", "labels", "masks"] if nms
                        else ["boxes", "scores", "kernels", "mask_feat"])
        meta = read_metadata(path)
        assert meta["family"] == "segment" and meta["outputs"] == outs
        assert {k: meta["model"][k] for k in ("num_prototypes", "dyconv_channels", "num_dyconvs")} == \
            {"num_prototypes": 8, "dyconv_channels": 8, "num_dyconvs": 3}
        assert meta["score_thr"] == 0.01 and meta["max_det"] == 100


def test_raw_outputs_match_torch(model, fixtures, onnx_files):
    """No NMS: boxes, scores, kernels and mask_feat equal the torch graph's and the head's."""
    x = _letterboxed(fixtures, ["portrait"])
    outs = _run(onnx_files[("static", False)], x)
    ref = _torch_graph(model, x, nms=False)
    assert [o.shape for o in outs] == [(1, 8400, 4), (1, 8400, 80), (1, 8400, 169), (1, 8, 80, 80)]
    assert all(o.dtype == np.float32 for o in outs)
    np.testing.assert_allclose(outs[0], ref[0], atol=1e-4, rtol=1e-4)
    for o, r in zip(outs[1:], ref[1:]):
        np.testing.assert_allclose(o, r, atol=1e-4, rtol=0)
    with torch.no_grad():  # the graph's kernels / mask_feat are the head's, in prior order
        _, _, ker, mf = model(model.normalize(torch.from_numpy(x)))
    flat = torch.cat([k.permute(0, 2, 3, 1).reshape(1, -1, 169) for k in ker], 1)
    np.testing.assert_allclose(outs[2], flat.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(outs[3], mf.numpy(), atol=1e-4, rtol=0)


def _check_nms_outputs(model, x, outs):
    """In-graph NMS + masks vs the torch graph, and the graph's batched dynamic convs vs the
    head's per-instance ones (`mask_logits`) for the kept priors."""
    ref = _torch_graph(model, x, nms=True)
    num_dets, boxes, scores, labels, masks = outs
    b = x.shape[0]
    assert masks.shape == (b, 100, x.shape[2] // 8, x.shape[3] // 8) and masks.dtype == np.float32
    np.testing.assert_array_equal(num_dets, ref[0])
    # the graph's batched matmul convs vs the head's per-instance grouped convs on the kept priors
    tc = model.test_cfg
    wrapper = ExportModule(model, nms=True, score_thr=tc.score_thr, nms_iou=tc.nms_iou,
                           max_det=tc.max_per_img, nms_pre=tc.nms_pre).eval()
    with torch.no_grad():
        decoded = model.decode(model(model.normalize(torch.from_numpy(x))), x.shape[2:])
        prior_idx = graph_multiclass_nms(decoded["boxes"], decoded["score_levels"], **wrapper.knobs)[-1]
        cls, _, ker, mf = model(model.normalize(torch.from_numpy(x)))
        priors = torch.cat(grid_priors([c.shape[-2:] for c in cls], model.cfg.strides,
                                       with_stride=True))
    for i in range(b):
        n = int(num_dets[i, 0])
        assert n > 0
        # rows pair up one to one; two rows whose scores tie to float rounding may swap places
        perm = pair_rows(boxes[i, :n], scores[i, :n], labels[i, :n],
                          ref[1][i, :n], ref[2][i, :n], ref[3][i, :n])
        np.testing.assert_allclose(masks[i, :n], ref[4][i, perm], atol=1e-4, rtol=1e-4)
        assert not masks[i, n:].any()
        with torch.no_grad():
            idx = prior_idx[i, perm]
            kernels = torch.cat([k[i].permute(1, 2, 0).reshape(-1, 169) for k in ker])
            own = model.bbox_head.mask_logits(mf[i], kernels[idx], priors[idx])
        np.testing.assert_allclose(masks[i, :n], own.numpy(), atol=1e-4, rtol=1e-4)


def test_nms_outputs_match_torch(model, fixtures, onnx_files):
    x = _letterboxed(fixtures, ["square"])
    _check_nms_outputs(model, x, _run(onnx_files[("static", True)], x))


def test_dynamic_nms_outputs(model, fixtures, onnx_files):
    """The dynamic graph (traced at 128, batch 1) at 384x640 with a batch of 2."""
    x = _letterboxed(fixtures, ["large", "portrait"], (384, 640))
    _check_nms_outputs(model, x, _run(onnx_files[("dynamic", True)], x))


def _check(dets, fixtures, names):
    for d, n in zip(dets, names):
        f = fixtures[n]
        h, w = f["image_bgr"].shape[:2]
        assert d.image_shape == (h, w)
        assert len(d) == len(f["scores"]) == 100, n
        assert match_detections(d.boxes, d.scores, d.labels, f["bboxes"], f["scores"],
                                f["labels"]) == 0, n
        assert d.masks.dtype == torch.bool and tuple(d.masks.shape) == (100, h, w)
        ious = mask_ious(d, f)
        assert min(ious) >= 0.99, (n, min(ious))


@pytest.mark.parametrize("kind,nms", [("static", False), ("static", True), ("dynamic", True)],
                         ids=["static-no_nms", "static-nms", "dynamic-nms"])
def test_detector_end_to_end(fixtures, onnx_files, kind, nms):
    """Detector over ONNX Runtime: the reference detections and masks (IoU >= 0.99) on the
    fixture images with the fixture's test_cfg (the graph's defaults, see `model`)."""
    det = Detector(onnx_files[(kind, nms)])
    images = [fixtures[n]["image_bgr"].numpy() for n in NAMES]
    _check(det.predict(images, batch_size=1 if kind == "static" else 3), fixtures, NAMES)


def test_detector_mask_thr_and_empty(onnx_files, fixtures):
    det = Detector(onnx_files[("static", True)])
    img = fixtures["portrait"]["image_bgr"].numpy()
    loose, strict = det.predict(img, mask_thr=0.2), det.predict(img, mask_thr=0.8)
    assert int(loose.masks.sum()) > int(strict.masks.sum())
    empty = det.predict(np.full((120, 200, 3), 114, np.uint8), score_thr=1.0)
    assert len(empty) == 0 and tuple(empty.masks.shape) == (0, 120, 200)
