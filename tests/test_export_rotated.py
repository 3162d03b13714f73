"""RTMDet-R export: the rotated decoding traced into ONNX, the exact rotated NMS after the graph
(in the `Detector`), parity with PyTorch on a reference fixture image."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import FIXTURES, load_fixture, need
from test_rotated import explain_twins, match_rotated

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import rtmdet  # noqa: E402
from rtmdet.deploy.onnx import ExportModule, export_onnx, read_metadata  # noqa: E402
from rtmdet.inference import Detector  # noqa: E402

ROT_FIX = FIXTURES / "rotated_rtmdet_tiny-3x-dota"


@pytest.fixture(scope="module")
def model():
    return rtmdet.load(need(ROT_FIX / "weights.pth"))


@pytest.fixture(scope="module")
def dynamic_onnx(model, tmp_path_factory):
    """Traced at 256x256 (cheap), run at the model's 1024 through dynamic axes."""
    return export_onnx(model, tmp_path_factory.mktemp("rot") / "r.onnx", imgsz=256, dynamic=True)


def test_graph_outputs_are_the_decoded_rotated_boxes(model, dynamic_onnx):
    proto = onnx.load(str(dynamic_onnx))
    assert [o.name for o in proto.graph.output] == ["boxes", "scores"]
    meta = read_metadata(dynamic_onnx)
    assert meta["family"] == "rotated" and meta["nms"] is False and len(meta["class_names"]) == 15
    import onnxruntime as ort
    x = torch.rand(2, 3, 320, 288, generator=torch.Generator().manual_seed(0)) * 255
    sess = ort.InferenceSession(str(dynamic_onnx), providers=["CPUExecutionProvider"])
    boxes, scores = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = ExportModule(model.eval())(x)
    n = (40 * 36 + 20 * 18 + 10 * 9)
    assert boxes.shape == (2, n, 5) and scores.shape == (2, n, 15)
    torch.testing.assert_close(torch.from_numpy(scores), ref_scores, rtol=1e-3, atol=1e-4)
    b = torch.from_numpy(boxes)
    # float32 sums in another order (ONNX Runtime's kernels): centres/sizes up to ~10^3 px on a
    # noise image drift by ~1e-5 relative; 0.05 px absolute is still far below a pixel
    torch.testing.assert_close(b[..., :4], ref_boxes[..., :4], rtol=1e-3, atol=5e-2)
    dth = torch.remainder(b[..., 4] - ref_boxes[..., 4], math.pi)
    assert float(torch.minimum(dth, math.pi - dth).max()) < 1e-3  # the le90 wrap may flip at +-pi/2
    assert float(b[..., 4].min()) >= -math.pi / 2 - 1e-6 and float(b[..., 4].max()) < math.pi / 2 + 1e-6


def test_onnx_detector_matches_pytorch_predict_on_a_fixture_image(model, dynamic_onnx):
    img = load_fixture(ROT_FIX / "predict_portrait.pth")["image_bgr"].numpy()  # 700x500 -> 1024
    det = Detector(dynamic_onnx)
    assert det.family.name == "rotated" and det.test_cfg.imgsz == 1024 and det.test_cfg.nms_iou == 0.1
    ours = det.predict(img)
    ref = model.predict(img)
    assert ours.rboxes.shape == (len(ours), 5) and len(ref) > 1000
    lost, extra, ds, db, dt = match_rotated(ours.rboxes, ours.scores, ours.labels,
                                            ref.rboxes, ref.scores, ref.labels)
    lost2, extra2 = explain_twins(lost, extra, ours.rboxes, ours.scores, ours.labels,
                                  ref.rboxes, ref.scores, ref.labels)
    print(f"\nonnx {len(ours)} / torch {len(ref)}; unmatched {len(lost)}/{len(extra)}, after "
          f"near-tie swaps {len(lost2)}/{len(extra2)}; max d score {ds:.1e}, d box {db:.1e} px, "
          f"d theta {dt:.1e}")
    slack = math.floor(0.002 * len(ref))  # README tolerances: a few at the score/NMS thresholds
    assert len(lost2) <= slack and len(extra2) <= slack


def test_in_graph_nms_is_refused_with_a_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match="no in-graph NMS"):
        export_onnx(model, tmp_path / "r_nms.onnx", imgsz=256, nms=True)
    assert not (tmp_path / "r_nms.onnx").exists()


def test_cli_export_refuses_nms_for_rotated_models(tmp_path, capsys):
    from rtmdet.cli import main
    w = str(need(ROT_FIX / "weights.pth"))
    assert main(["export", "--weights", w, "--nms", "--output", str(tmp_path / "a.onnx")]) == 2
    assert "no in-graph NMS" in capsys.readouterr().err
