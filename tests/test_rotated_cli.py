"""The command line for RTMDet-R and large images: `rtmdet val` on DOTA / YOLO-OBB data (DOTA mAP
table printed by the family), `rtmdet split`, and `--tile` on predict and val."""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from rtmdet.cli import main
from rtmdet.data.datasets import is_yolo_obb, load_dataset
from rtmdet.data.dota import DOTA_V1_CLASSES, save_dota_txt
from rtmdet.ops.rotated import obb2poly

from helpers import DET_FIX, FIXTURES, load_fixture, need

ROT_FIX = FIXTURES / "rotated_rtmdet_tiny-3x-dota"
WEIGHTS = str(ROT_FIX / "weights.pth")


def _reference_gt(case: str, top: int):
    """A fixture image and its `top` best reference detections as (N,8) polygons + labels."""
    fix = load_fixture(ROT_FIX / f"predict_{case}.pth")
    polys = obb2poly(fix["bboxes"][:top]).reshape(-1, 8).numpy()
    return fix["image_bgr"].numpy(), polys, fix["labels"][:top].numpy()


@pytest.fixture(scope="module")
def dota_folder(tmp_path_factory):
    """DOTA layout: val/images/square.png + val/labelTxt/square.txt (GT = reference detections)."""
    root = tmp_path_factory.mktemp("dota")
    img, polys, labels = _reference_gt("square", 40)
    (root / "val" / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "val" / "images" / "square.png"), img)
    save_dota_txt(root / "val" / "labelTxt" / "square.txt", polys, DOTA_V1_CLASSES, labels)
    return root


def test_load_dataset_tells_dota_and_yolo_obb_apart(dota_folder, tmp_path):
    ds = load_dataset(dota_folder, split="val")
    assert len(ds) == 1 and ds.class_names == list(DOTA_V1_CLASSES)
    assert ds.records[0].polygons.shape == (40, 8)
    # YOLO-OBB: cls x1 y1 ... x4 y4 normalised; plain YOLO boxes stay YOLO
    img, polys, labels = _reference_gt("portrait", 10)
    h, w = img.shape[:2]
    for kind, rows in (("obb", [[c, *(p / np.array([w, h] * 4))] for c, p in zip(labels, polys)]),
                       ("box", [[c, 0.5, 0.5, 0.2, 0.1] for c in labels])):
        root = tmp_path / kind
        (root / "images" / "val").mkdir(parents=True)
        (root / "labels" / "val").mkdir(parents=True)
        cv2.imwrite(str(root / "images" / "val" / "p.png"), img)
        (root / "labels" / "val" / "p.txt").write_text(
            "".join(" ".join(f"{v:.6g}" for v in r) + "\n" for r in rows))
        (root / "classes.txt").write_text("\n".join(DOTA_V1_CLASSES) + "\n")
        ds = load_dataset(root, split="val")
        assert is_yolo_obb(root, "val") == (kind == "obb") and len(ds.records[0].labels) == 10
        assert (ds.records[0].polygons is not None) == (kind == "obb")
        if kind == "obb":
            np.testing.assert_allclose(ds.records[0].polygons, polys, atol=0.01)


def test_val_prints_the_dota_table_and_saves_rotated_detections(dota_folder, tmp_path, capsys):
    out = tmp_path / "val"
    rc = main(["val", "--data", str(dota_folder), "--weights", WEIGHTS, "--batch", "1",
               "--save-json", "--plots", "--save-dir", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "DOTA rotated-box mAP" in printed and "AP50" in printed
    assert "plane" in printed and "helicopter" in printed  # one row per class
    m = re.search(r"^mAP\s+([0-9.]+)\s*$", printed, re.M)
    assert m and float(m.group(1)) > 0.5, printed  # the GT are the model's own detections
    assert "no plots for rotated models" in printed and not (out / "pr_curves.png").exists()
    dets = json.loads((out / "detections.json").read_text())
    assert dets and len(dets[0]["poly"]) == 8 and len(dets[0]["rbox"]) == 5
    assert dets[0]["file_name"] == "square.png"


def test_tiled_val_and_predict_of_a_rotated_model(dota_folder, tmp_path, capsys):
    rc = main(["val", "--data", str(dota_folder), "--weights", WEIGHTS, "--tile", "512",
               "--overlap", "128", "--imgsz", "256", "--save-dir", str(tmp_path / "v")])
    printed = capsys.readouterr().out
    assert rc == 0 and re.search(r"^mAP\s+[0-9.]+\s*$", printed, re.M)
    out = tmp_path / "pred"
    rc = main(["predict", str(dota_folder / "val" / "images"), "--weights", WEIGHTS, "--tile", "512",
               "--overlap", "128", "--imgsz", "256", "--score-thr", "0.05", "--save-dir", str(out),
               "--save-txt", "--save-json"])
    assert rc == 0
    pred = json.loads((out / "predictions.json").read_text())[0]
    assert pred["image_shape"] == [1024, 1024] and len(pred["detections"][0]["poly"]) == 8
    assert cv2.imread(str(out / "square.png")).shape == (1024, 1024, 3)
    assert main(["predict", str(dota_folder), "--weights", WEIGHTS, "--tile", "256",
                 "--overlap", "256"]) == 2
    assert "--overlap 256 must be smaller than --tile 256" in capsys.readouterr().err


def test_tiled_predict_cli_for_a_detection_model(tmp_path):
    img = cv2.resize(load_fixture(DET_FIX / "predict_large.pth")["image_bgr"].numpy(), (900, 700))
    cv2.imwrite(str(tmp_path / "big.jpg"), img)
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "big.jpg"), "--weights", str(need(DET_FIX / "weights.pth")),
                 "--tile", "640", "--overlap", "100", "--imgsz", "320", "--score-thr", "0.01",
                 "--save-dir", str(out), "--save-json"]) == 0
    pred = json.loads((out / "predictions.json").read_text())[0]
    boxes = np.array([d["box"] for d in pred["detections"]]).reshape(-1, 4)
    assert len(boxes) and boxes.min() >= 0 and boxes[:, 2].max() <= 900 and boxes[:, 3].max() <= 700


def test_split_cli(tmp_path, capsys):
    src = tmp_path / "dota"
    (src / "images").mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 255, (700, 1080, 3), dtype=np.uint8)
    cv2.imwrite(str(src / "images" / "P0001.png"), img)
    polys = np.array([[100, 100, 200, 100, 200, 150, 100, 150],      # left windows only
                      [580, 300, 620, 300, 620, 340, 580, 340]], float)  # in all four windows
    save_dota_txt(src / "labelTxt" / "P0001.txt", polys, ["plane", "ship"], np.array([0, 1]))
    out = tmp_path / "patches"
    rc = main(["split", str(src), "--out", str(out), "--patch", "640", "--overlap", "200"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "1 images -> 4 patches, 2 objects -> 6 patch objects" in printed, printed
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["P0001__640__0___0.png", "P0001__640__0___60.png", "P0001__640__440___0.png",
                     "P0001__640__440___60.png"]
    assert (out / "annfiles" / "P0001__640__440___0.txt").read_text().split() == \
        ["140", "300", "180", "300", "180", "340", "140", "340", "ship", "0"]
    patch = cv2.imread(str(out / "images" / "P0001__640__440___60.png"))
    assert np.array_equal(patch, img[60:700, 440:1080])
    # the patches are a DOTA dataset again
    ds = load_dataset(out)
    assert len(ds) == 4 and sum(len(r.labels) for r in ds.records) == 6
    # usage errors: one line, exit 2
    assert main(["split", str(src), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["split", str(src), "--out", str(tmp_path / "o2"), "--patch", "100", "--overlap", "100"]) == 2
    assert main(["split", str(tmp_path / "missing"), "--out", str(tmp_path / "o3")]) == 2
