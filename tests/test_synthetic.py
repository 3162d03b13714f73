"""The generated shapes dataset: valid COCO, deterministic, fast, and its labels match its pixels."""
from __future__ import annotations

import hashlib
import json
import time

import cv2
import numpy as np
import pytest

from rtmdet.data.datasets import load_dataset
from rtmdet.data.synthetic import make_shapes_dataset, make_shapes_splits


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_valid_coco_with_polygons(tmp_path):
    ann_file = make_shapes_dataset(tmp_path, num_images=12, image_size=(96, 128), seed=1, split="val")
    assert ann_file == tmp_path / "annotations" / "instances_val.json"
    doc = json.loads(ann_file.read_text())
    assert [c["name"] for c in doc["categories"]] == ["rectangle", "ellipse", "triangle"]
    assert len(doc["images"]) == 12 and len({im["id"] for im in doc["images"]}) == 12
    assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"]) >= 12
    for im in doc["images"]:
        img = cv2.imread(str(tmp_path / "images" / "val" / im["file_name"]))
        assert img.shape == (96, 128, 3) and (im["height"], im["width"]) == (96, 128)
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 96
        (poly,) = a["segmentation"]
        xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
        assert len(poly) >= 6 and len(poly) % 2 == 0
        # the polygon spans the box (box is the pixel-inclusive extent of the drawn polygon)
        assert xs.min() == pytest.approx(x) and xs.max() + 1 == pytest.approx(x + w)
        assert ys.min() == pytest.approx(y) and ys.max() + 1 == pytest.approx(y + h)
        assert 0 < a["area"] <= w * h
    ds = load_dataset(tmp_path, split="val")
    assert ds.report.ok and len(ds) == 12


def test_shapes_are_where_the_labels_say(tmp_path):
    # PNG (lossless) so the pixels inside each polygon are exactly the drawn colour
    make_shapes_dataset(tmp_path, num_images=6, image_size=160, seed=2, split="s", ext=".png", max_overlap=0.0)
    doc = json.loads((tmp_path / "annotations" / "instances_s.json").read_text())
    for im in doc["images"]:
        img = cv2.imread(str(tmp_path / "images" / "s" / im["file_name"])).astype(np.int32)
        for a in (a for a in doc["annotations"] if a["image_id"] == im["id"]):
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [np.array(a["segmentation"][0]).reshape(-1, 2).astype(np.int32)], 1)
            inside = img[mask.astype(bool)]
            # a filled shape is (nearly) one colour; the noisy background would have a wide spread
            dominant = np.median(inside, axis=0)
            share = (np.abs(inside - dominant).max(1) <= 2).mean()
            assert share > 0.8, (im["file_name"], a["id"], share)


def test_deterministic_per_seed(tmp_path):
    make_shapes_dataset(tmp_path / "a", num_images=5, seed=7, image_size=64)
    make_shapes_dataset(tmp_path / "b", num_images=5, seed=7, image_size=64)
    make_shapes_dataset(tmp_path / "c", num_images=5, seed=8, image_size=64)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_size_range_classes_and_empty_images(tmp_path):
    classes = ("circle", "star", "hexagon", "diamond", "pentagon")
    ann_file = make_shapes_dataset(tmp_path, num_images=20, image_size=((60, 90), (100, 140)), classes=classes,
                                   seed=4, empty_fraction=0.3)
    doc = json.loads(ann_file.read_text())
    hs = {im["height"] for im in doc["images"]}
    ws = {im["width"] for im in doc["images"]}
    assert min(hs) >= 60 and max(hs) <= 90 and len(hs) > 1
    assert min(ws) >= 100 and max(ws) <= 140 and len(ws) > 1
    assert [c["name"] for c in doc["categories"]] == list(classes)
    with_objs = {a["image_id"] for a in doc["annotations"]}
    assert 0 < len(with_objs) < 20
    with pytest.raises(ValueError, match="unknown shape"):
        make_shapes_dataset(tmp_path, num_images=1, classes=("blob",))


def test_splits(tmp_path):
    paths = make_shapes_splits(tmp_path, {"train": 6, "val": 3}, image_size=64)
    assert set(paths) == {"train", "val"}
    tr, va = load_dataset(tmp_path, split="train"), load_dataset(tmp_path, split="val")
    assert (len(tr), len(va)) == (6, 3)
    assert tr.records[0].path != va.records[0].path
    a = cv2.imread(tr.records[0].path)
    b = cv2.imread(va.records[0].path)
    assert not np.array_equal(a, b)  # different seeds per split


def test_fast_enough(tmp_path):
    t = time.perf_counter()
    make_shapes_dataset(tmp_path, num_images=64, image_size=320, seed=0)
    assert time.perf_counter() - t < 3.0
