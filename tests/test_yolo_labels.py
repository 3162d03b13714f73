"""`Detections.to_yolo()` and `rtmdet predict --save-txt --txt-format yolo`: pseudo-labels that
the YOLO readers take back as the same boxes, polygons and oriented boxes."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from rtmdet.cli import main
from rtmdet.data.datasets import is_yolo_obb, load_dataset
from rtmdet.data.dota import load_yolo_obb
from rtmdet.detections import Detections

H, W = 100, 120
NAMES = ["a", "b", "c"]


def _dataset(root, lines: str):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "x.png"), np.zeros((H, W, 3), np.uint8))
    (root / "labels" / "x.txt").write_text(lines)
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in NAMES))
    return root


def test_boxes_come_back_clipped_to_the_image(tmp_path):
    boxes = torch.tensor([[10.25, 20.5, 50.75, 90.0], [-7.0, 30.0, 130.0, 110.0], [0.0, 0.0, 1.5, 2.5]])
    d = Detections(boxes, torch.tensor([0.9, 0.5, 0.2]), torch.tensor([2, 0, 1]), NAMES, image_shape=(H, W))
    text = d.to_yolo()
    assert text.splitlines()[0].split()[0] == "2" and len(text.splitlines()[0].split()) == 5
    rec = load_dataset(_dataset(tmp_path, text), split="train").records[0]
    clipped = boxes.numpy().clip(0, [W, H, W, H])
    np.testing.assert_allclose(rec.boxes, clipped, atol=1e-3)  # 6 decimals of 120 px: < 1e-3 px
    assert rec.labels.tolist() == [2, 0, 1]


def test_masks_come_back_as_their_outline_never_as_an_oriented_box(tmp_path):
    ellipse = np.zeros((H, W), np.uint8)
    cv2.ellipse(ellipse, (60, 50), (30, 18), 20, 0, 360, 1, -1)
    rect = np.zeros((H, W), np.uint8)
    rect[10:30, 70:110] = 1  # its outline has 4 points: written with 5
    two = np.zeros((H, W), np.uint8)
    two[60:90, 5:40] = 1
    two[5:8, 5:8] = 1  # a speck beside the large part: the largest contour is kept
    masks = torch.from_numpy(np.stack([ellipse, rect, two]).astype(bool))
    boxes = torch.tensor([[30.0, 32, 90, 68], [70, 10, 110, 30], [5, 5, 40, 90]])
    d = Detections(boxes, torch.ones(3), torch.tensor([0, 1, 2]), NAMES, masks=masks, image_shape=(H, W))
    text = d.to_yolo()
    assert [len(line.split()) for line in text.splitlines()][1] == 1 + 2 * 5
    root = _dataset(tmp_path, text)
    assert not is_yolo_obb(root, "train")
    rec = load_dataset(root, split="train").records[0]
    assert rec.labels.tolist() == [0, 1, 2]
    for m, seg, box in zip(masks.numpy(), rec.segmentations, rec.boxes):
        poly = np.asarray(seg[0]).reshape(-1, 2)
        filled = np.zeros((H, W), np.uint8)
        cv2.fillPoly(filled, [np.round(poly).astype(np.int32)], 1)
        biggest = np.zeros((H, W), np.uint8)
        n, comp = cv2.connectedComponents(m.astype(np.uint8))
        sizes = [(comp == k).sum() for k in range(1, n)]
        biggest[comp == 1 + int(np.argmax(sizes))] = 1
        iou = (filled & biggest).sum() / (filled | biggest).sum()
        assert iou > 0.97, iou  # the outline runs through the boundary pixels' centres
        ys, xs = np.nonzero(biggest)
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max(), ys.max()], atol=1e-3)


def test_rotated_boxes_come_back_as_the_same_corners(tmp_path):
    rboxes = torch.tensor([[60.0, 50.0, 40.0, 16.0, 0.5], [30.0, 70.0, 20.0, 30.0, -1.2]])
    d = Detections(torch.zeros(2, 4), torch.ones(2), torch.tensor([1, 2]), NAMES, rboxes=rboxes,
                   image_shape=(H, W))
    text = d.to_yolo()
    assert [len(line.split()) for line in text.splitlines()] == [9, 9]
    root = _dataset(tmp_path, text)
    assert is_yolo_obb(root, "train")
    rec = load_yolo_obb(root, split="train").records[0]
    np.testing.assert_allclose(rec.polygons, np.asarray(d.polygons()).reshape(-1, 8), atol=1e-3)
    assert rec.labels.tolist() == [1, 2]


def test_predict_writes_a_dataset_that_val_reads_back(tmp_path, capsys):
    """`rtmdet predict ds/images --save-txt --txt-format yolo --save-dir ds`: labels where the
    YOLO reader looks for them, and classes.txt; the dataset read back holds the predictions."""
    from helpers import model_with_boxes, save_model
    weights = str(save_model(model_with_boxes(NAMES, imgsz=64), tmp_path / "m.pth"))
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(ds / "images" / f"im{i}.png"), rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8))
    assert main(["predict", str(ds / "images"), "--weights", weights, "--save-dir", str(ds),
                 "--score-thr", "0.0", "--max-det", "4", "--no-save", "--save-txt", "--txt-format", "yolo",
                 "--save-json"]) == 0
    assert (ds / "classes.txt").read_text() == "a\nb\nc\n"
    data = load_dataset(ds, split="train")
    preds = {r["source"].rsplit("/", 1)[1]: r["detections"] for r in
             json.loads((ds / "predictions.json").read_text())}
    assert data.class_names == NAMES and sum(len(p) for p in preds.values()) > 0
    for rec in data.records:
        p = preds[rec.path.rsplit("/", 1)[1]]
        want = np.array([q["box"] for q in p]).reshape(-1, 4).clip(0, [64, rec.height, 64, rec.height])
        np.testing.assert_allclose(rec.boxes, want, atol=1e-3)
        assert rec.labels.tolist() == [q["label"] for q in p]


def test_yolo_labels_are_for_images_only(tiny3_weights, tmp_path, capsys):
    w = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    assert main(["predict", str(tmp_path / "clip.avi"), "--weights", tiny3_weights, "--save-txt",
                 "--txt-format", "yolo", "--save-dir", str(tmp_path / "o")]) == 2
    assert "clip.avi is a video" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "clip.avi"), "--weights", tiny3_weights, "--txt-format", "yolo",
                 "--save-dir", str(tmp_path / "o")]) == 2
    assert "give --save-txt too" in capsys.readouterr().err
    with pytest.raises(ValueError, match="image_shape"):
        Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0)).to_yolo()
