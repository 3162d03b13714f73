"""One inference loop for every backend: `rtmdet val` scores an exported ONNX model with the
same 12 COCO numbers as the checkpoint it came from (fixture weights, fixture images)."""
from __future__ import annotations

import json

import cv2
import pytest
import torch

from helpers import DET_FIX, INS_FIX, load_fixture, need

import rtmdet
from rtmdet.cli import main
from rtmdet.data.datasets import load_dataset
from rtmdet.deploy.onnx import export_onnx
from rtmdet.eval.coco import METRIC_NAMES
from rtmdet.eval.validate import evaluate_model
from rtmdet.inference import Detector

SIZE = 320


def _dataset(root, model):
    """The three fixture images with ground truth = the model's top detections at SIZE, every
    other box shifted by 4 px (so AP is far from 0 and from 1)."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i, name in enumerate(["square", "portrait", "large"]):
        img = load_fixture(DET_FIX / f"predict_{name}.pth")["image_bgr"].numpy()
        cv2.imwrite(str(root / "images" / "val" / f"{name}.png"), img)
        images.append({"id": i + 1, "file_name": f"{name}.png", "height": img.shape[0], "width": img.shape[1]})
        det = model.predict(img, score_thr=0.01, max_per_img=20, imgsz=SIZE).numpy()
        for j, ((x1, y1, x2, y2), lab) in enumerate(zip(det.boxes.tolist(), det.labels.tolist())):
            x1, x2 = x1 + 4 * (j % 2), x2 + 4 * (j % 2)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                         "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(model.class_names)]
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    assert len(anns) > 5
    return path


@pytest.mark.parametrize("fixture", [DET_FIX, INS_FIX], ids=["det", "ins"])
def test_onnx_scores_like_its_checkpoint(tmp_path, fixture):
    weights = need(fixture / "weights.pth")
    model = rtmdet.load(weights)
    _dataset(tmp_path / "ds", model)
    dataset = load_dataset(tmp_path / "ds", split="val")
    onnx_path = export_onnx(model, tmp_path / "m.onnx", imgsz=SIZE)
    with torch.inference_mode():
        ref, _ = evaluate_model(model, dataset, progress=False, imgsz=SIZE, score_thr=0.005)
    got, _ = evaluate_model(Detector(onnx_path), dataset, progress=False, score_thr=0.005)
    assert set(got) == set(ref) == set({"det": ["bbox"], "ins": ["bbox", "segm"]}[
        "det" if fixture == DET_FIX else "ins"])
    for kind in ref:
        for k in METRIC_NAMES:
            assert got[kind][k] == pytest.approx(ref[kind][k], abs=1e-4), (kind, k)
    assert 0.05 < ref["bbox"]["AP"] < 0.99  # a meaningful comparison, not two zeros


def test_cli_val_and_predict_take_an_onnx_file(tmp_path, capsys):
    model = rtmdet.load(need(DET_FIX / "weights.pth"))
    _dataset(tmp_path / "ds", model)
    onnx_path = export_onnx(model, tmp_path / "m.onnx", imgsz=SIZE)
    assert main(["val", "--data", str(tmp_path / "ds"), "--weights", str(onnx_path)]) == 0
    assert "AP" in capsys.readouterr().out
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "ds" / "images" / "val"), "--weights", str(onnx_path),
                 "--save-dir", str(out), "--save-json"]) == 0
    assert len(json.loads((out / "predictions.json").read_text())) == 3
