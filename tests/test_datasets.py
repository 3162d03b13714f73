"""COCO / YOLO readers: conversion, every validation case, strict mode, format detection."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from rtmdet.data.datasets import LoadReport, load_coco, load_dataset, load_yolo


def write_img(path, w, h):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))


def coco_doc(images, anns, cats=((3, "cat"), (7, "dog"))):
    return {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in cats]}


def ann(aid, iid, cat, bbox, **kw):
    return {"id": aid, "image_id": iid, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0, **kw}


@pytest.fixture
def coco_dir(tmp_path):
    """Two 64x48 images on disk; returns (root, write(doc) -> json path)."""
    for name in ("a.png", "b.png"):
        write_img(tmp_path / "imgs" / name, 64, 48)

    def write(doc):
        p = tmp_path / "ann.json"
        p.write_text(json.dumps(doc))
        return p

    return tmp_path, write


def images2():
    return [{"id": 10, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 20, "file_name": "b.png", "width": 64, "height": 48}]


# ------------------------------------------------------------------------------------------ COCO


def test_coco_clean_load(coco_dir):
    root, write = coco_dir
    seg = [[1, 2, 10, 2, 10, 12]]
    doc = coco_doc(images2(), [ann(1, 10, 7, [1, 2, 9, 10], segmentation=seg),
                               ann(2, 10, 3, [20, 5, 10, 10], iscrowd=1),
                               ann(3, 20, 3, [0, 0, 64, 48])])
    ds = load_coco(write(doc), root / "imgs")
    assert ds.class_names == ["cat", "dog"] and ds.cat_ids == [3, 7]
    assert [r.image_id for r in ds.records] == [10, 20]
    r = ds.records[0]
    assert r.path == str(root / "imgs" / "a.png") and (r.width, r.height) == (64, 48)
    np.testing.assert_array_equal(r.boxes, [[1, 2, 10, 12], [20, 5, 30, 15]])
    assert r.boxes.dtype == np.float32
    assert r.labels.tolist() == [1, 0] and r.iscrowd.tolist() == [False, True]
    assert r.segmentations == [seg, []]
    assert ds.report.ok and ds.report.num_images == 2 and ds.report.num_annotations == 3
    assert ds.records[1].boxes.shape == (1, 4)


def test_coco_missing_image_skipped_and_reported(coco_dir, caplog):
    root, write = coco_dir
    imgs = images2() + [{"id": 30, "file_name": "gone.png", "width": 64, "height": 48}]
    doc = coco_doc(imgs, [ann(1, 30, 3, [1, 1, 5, 5]), ann(2, 10, 3, [1, 1, 5, 5])])
    with caplog.at_level(logging.INFO, logger="rtmdet.data.datasets"):
        ds = load_coco(write(doc), root / "imgs")
    assert [r.image_id for r in ds.records] == [10, 20]
    assert ds.report.missing_images == 1 and ds.report.orphan_annotations == 0
    assert "gone.png" in " ".join(ds.report.problems())
    assert any("1 missing image files" in m for m in caplog.messages)
    # without the file check the image is kept
    ds2 = load_coco(write(doc), root / "imgs", check_images=False)
    assert len(ds2) == 3 and ds2.report.ok


def test_coco_zero_and_negative_boxes_skipped(coco_dir):
    root, write = coco_dir
    doc = coco_doc(images2(), [ann(1, 10, 3, [5, 5, 0, 10]), ann(2, 10, 3, [5, 5, 10, -2]),
                               ann(3, 10, 3, [5, 5, 10, 10]), ann(4, 10, 3, [5, 5, float("nan"), 3])])
    # NaN is not valid JSON for strict parsers but Python writes it; it must be caught as degenerate
    ds = load_coco(write(doc), root / "imgs")
    assert ds.report.degenerate_boxes == 3
    np.testing.assert_array_equal(ds.records[0].boxes, [[5, 5, 15, 15]])


def test_coco_boxes_outside_clipped_and_counted(coco_dir):
    root, write = coco_dir
    doc = coco_doc(images2(), [ann(1, 10, 3, [-4, 40, 20, 20]),  # partly outside left and bottom
                               ann(2, 10, 3, [100, 100, 10, 10]),  # completely outside: nothing left
                               ann(3, 10, 3, [60, 0, 4, 48])])  # touches the border exactly: fine
    ds = load_coco(write(doc), root / "imgs")
    np.testing.assert_array_equal(ds.records[0].boxes, [[0, 40, 16, 48], [60, 0, 64, 48]])
    assert ds.report.clipped_boxes == 1 and ds.report.degenerate_boxes == 1


def test_coco_unknown_category_skipped(coco_dir):
    root, write = coco_dir
    doc = coco_doc(images2(), [ann(1, 10, 5, [1, 1, 5, 5]), ann(2, 10, 7, [1, 1, 5, 5])])
    ds = load_coco(write(doc), root / "imgs")
    assert ds.report.unknown_categories == 1
    assert ds.records[0].labels.tolist() == [1]


def test_coco_duplicate_image_ids(coco_dir):
    root, write = coco_dir
    imgs = images2() + [{"id": 10, "file_name": "b.png", "width": 64, "height": 48}]
    ds = load_coco(write(coco_doc(imgs, [])), root / "imgs")
    assert ds.report.duplicate_image_ids == 1
    assert [r.image_id for r in ds.records] == [10, 20]
    assert ds.records[0].path.endswith("a.png")


def test_coco_orphan_annotation(coco_dir):
    root, write = coco_dir
    ds = load_coco(write(coco_doc(images2(), [ann(1, 99, 3, [1, 1, 5, 5])])), root / "imgs")
    assert ds.report.orphan_annotations == 1 and ds.report.num_annotations == 0


def test_coco_size_from_header_and_unreadable(coco_dir):
    root, write = coco_dir
    write_img(root / "imgs" / "c.png", 30, 20)
    (root / "imgs" / "bad.png").write_bytes(b"not an image at all")
    imgs = [{"id": 1, "file_name": "c.png"}, {"id": 2, "file_name": "bad.png"}]
    ds = load_coco(write(coco_doc(imgs, [ann(1, 1, 3, [0, 0, 40, 40])])), root / "imgs")
    assert (ds.records[0].width, ds.records[0].height) == (30, 20)
    np.testing.assert_array_equal(ds.records[0].boxes, [[0, 0, 30, 20]])  # clipped to the real size
    assert ds.report.unreadable_images == 1 and len(ds) == 1


def test_coco_empty_file(tmp_path):
    p = tmp_path / "empty.json"
    p.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_coco(p)
    p.write_text(json.dumps(coco_doc([], [])))
    with pytest.raises(ValueError, match="no images"):
        load_coco(p)


def test_coco_corrupt_json_names_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"images": [{"id": 1,')
    with pytest.raises(ValueError, match="broken.json.*invalid JSON"):
        load_coco(p)
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="broken.json.*not a COCO"):
        load_coco(p)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        load_coco(tmp_path / "nothere.json")


def test_coco_strict(coco_dir):
    root, write = coco_dir
    clean = coco_doc(images2(), [ann(1, 10, 3, [1, 1, 5, 5])])
    assert len(load_coco(write(clean), root / "imgs", strict=True)) == 2
    bad = coco_doc(images2(), [ann(1, 10, 3, [1, 1, 0, 5]), ann(2, 10, 4, [1, 1, 5, 5]),
                               ann(3, 20, 3, [50, 40, 30, 30])])
    with pytest.raises(ValueError) as e:
        load_coco(write(bad), root / "imgs", strict=True)
    msg = str(e.value)
    assert "zero/negative-size" in msg and "unknown category" in msg and "clipped" in msg


def test_coco_malformed_segmentations_drop_the_mask_keep_the_box(coco_dir):
    root, write = coco_dir
    square = [[1, 1, 9, 1, 9, 9, 1, 9]]
    good = [square, [[1, 1, 9, 1], [1, 1, 9, 1, 9, 9]], [[1, 1, 9, 1, 9]], [[]], [],
            {"size": [48, 64], "counts": "PP3"}, {"size": [48, 64], "counts": [100, 20, 64 * 48 - 120]}]
    bad = {"a flat list of numbers": [1, 1, 9, 1, 9, 9],
           "not a list of finite numbers": [[1, 1, 9, float("nan"), 9, 9]],
           "without a [height, width] size": {"counts": "PP3"},
           "of size [64, 48] on a 64x48 image": {"size": [64, 48], "counts": "PP3"},
           "do not add up": {"size": [48, 64], "counts": [5, 5]},
           "neither polygons nor RLE": "1 1 9 1 9 9"}
    segs = good + list(bad.values())
    doc = coco_doc(images2(), [ann(i + 1, 10, 3, [1, 1, 8, 8], segmentation=s) for i, s in enumerate(segs)])
    ds = load_coco(write(doc), root / "imgs")
    assert ds.report.malformed_segmentations == len(bad) and ds.report.malformed_annotations == 0
    rec = ds.records[0]
    assert len(rec.boxes) == len(segs)  # every box kept
    assert rec.segmentations[:len(good)] == good and rec.segmentations[len(good):] == [[]] * len(bad)
    problems = " ".join(ds.report.problems())
    assert "malformed segmentations (mask dropped, box kept)" in problems
    assert all(why in problems for why in list(bad)[:5])  # the report keeps 5 examples
    with pytest.raises(ValueError, match="malformed segmentations"):
        load_coco(write(doc), root / "imgs", strict=True)


def test_report_summary_line():
    r = LoadReport(source="x.json")
    assert r.ok and "no problems" in r.summary()
    r.add("clipped_boxes", "ann 1")
    r.add("clipped_boxes", "ann 2")
    assert not r.ok and "2 boxes partly outside the image (clipped)" in r.summary()
    assert "\n" not in r.summary()


# ------------------------------------------------------------------------------------------ YOLO


def make_yolo(tmp_path, names=("a", "b", "c"), split="val"):
    root = tmp_path / "yolo"
    write_img(root / "images" / split / "im1.jpg", 200, 100)
    write_img(root / "images" / split / "im2.jpg", 50, 40)
    write_img(root / "images" / split / "im3.jpg", 50, 40)  # no label file: background image
    (root / "labels" / split).mkdir(parents=True)
    (root / "labels" / split / "im1.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"  # -> [80, 30, 120, 70]
        "2 0.1 0.1 0.4 0.4\n"  # partly outside -> clipped to [0, 0, 60, 30]
        "1 0.5 0.5 0 0.2\n"  # zero width -> skipped
        "5 0.5 0.5 0.1 0.1\n"  # class 5 unknown -> skipped
        "1 0.5 oops 0.1 0.1\n"  # malformed -> skipped
        "\n"
    )
    (root / "labels" / split / "im2.txt").write_text("1 0.1 0.25 0.5 0.25 0.5 0.75\n")  # polygon
    y = root / "data.yaml"
    y.write_text(f"path: .\ntrain: images/train\n{split}: images/{split}\nnames: {list(names)}\n")
    return root, y


def test_yolo_yaml(tmp_path, caplog):
    root, y = make_yolo(tmp_path)
    ds = load_yolo(y, split="val")
    assert ds.class_names == ["a", "b", "c"] and ds.cat_ids == [0, 1, 2]
    assert [r.path.split("/")[-1] for r in ds.records] == ["im1.jpg", "im2.jpg", "im3.jpg"]
    r1, r2, r3 = ds.records
    assert (r1.width, r1.height) == (200, 100)
    np.testing.assert_allclose(r1.boxes, [[80, 30, 120, 70], [0, 0, 60, 30]], atol=1e-4)
    assert r1.labels.tolist() == [0, 2]
    np.testing.assert_allclose(r2.boxes, [[5, 10, 25, 30]], atol=1e-4)
    np.testing.assert_allclose(r2.segmentations[0][0], [5, 10, 25, 10, 25, 30], atol=1e-4)
    assert r3.boxes.shape == (0, 4) and r3.labels.shape == (0,)
    rep = ds.report
    assert (rep.clipped_boxes, rep.degenerate_boxes, rep.unknown_categories, rep.malformed_annotations) == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="malformed"):
        load_yolo(y, split="val", strict=True)


def test_float_rounding_at_the_image_edge_is_not_a_problem(tmp_path):
    """A correctly converted dataset: boxes that touch the border come back 1e-8 px outside
    after normalised -> pixel arithmetic. Clipped without a report (strict loads it); a box a
    pixel outside is still reported."""
    root = tmp_path / "yolo"
    write_img(root / "images" / "val" / "a.jpg", 640, 427)
    x2, w = 639.99999999, 640  # a box to the right edge, written with 8 decimals
    cx, bw = (600 + x2) / 2 / w, (x2 - 600) / w
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "a.txt").write_text(
        f"0 {cx:.8f} 0.50000000 {bw + 3e-8:.8f} 1.00000002\n"  # 1e-8 outside right, top, bottom
        f"0 {(600 + 641) / 2 / w:.8f} 0.5 {41 / w:.8f} 0.2\n")  # a pixel outside: reported
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames: [a]\n")
    ds = load_yolo(root / "data.yaml", split="val")
    assert ds.report.clipped_boxes == 1 and ds.records[0].boxes.max() <= 640
    (root / "labels" / "val" / "a.txt").write_text(f"0 {cx:.8f} 0.50000000 {bw + 3e-8:.8f} 1.00000002\n")
    ds = load_yolo(root / "data.yaml", split="val", strict=True)
    assert ds.report.ok and len(ds.records[0].boxes) == 1
    np.testing.assert_allclose(ds.records[0].boxes[0], [600, 0, 640, 427], atol=1e-3)


def test_yolo_names_dict_and_folder_and_missing_split(tmp_path):
    root, y = make_yolo(tmp_path)
    y.write_text("path: .\nval: images/val\nnames:\n  0: a\n  1: b\n  2: c\n")
    ds = load_yolo(root, split="val")  # folder holding a yaml
    assert ds.class_names == ["a", "b", "c"] and len(ds) == 3
    with pytest.raises(ValueError, match="no 'test' split"):
        load_yolo(y, split="test")
    y.unlink()
    (root / "classes.txt").write_text("a\nb\nc\n")
    ds = load_yolo(root, split="val")  # images/<split> + labels/ + classes.txt
    assert ds.class_names == ["a", "b", "c"] and ds.report.unknown_categories == 1


def test_yolo_missing_image_in_list(tmp_path):
    root, y = make_yolo(tmp_path)
    (root / "val.txt").write_text("images/val/im1.jpg\nimages/val/nothere.jpg\n")
    y.write_text("path: .\nval: val.txt\nnames: [a, b, c]\n")
    ds = load_yolo(y, split="val")
    assert len(ds) == 1 and ds.report.missing_images == 1


def test_yolo_and_coco_agree_on_synthetic(tmp_path):
    from rtmdet.data.synthetic import make_shapes_dataset

    ann_file = make_shapes_dataset(tmp_path / "shapes", num_images=8, image_size=((100, 160), (120, 200)),
                                   seed=3, split="val")
    coco = load_dataset(tmp_path / "shapes", split="val")
    # write the same data as YOLO labels, independently of the readers
    doc = json.loads(ann_file.read_text())
    root = tmp_path / "shapes"
    (root / "labels" / "val").mkdir(parents=True)
    for im in doc["images"]:
        lines = []
        for a in doc["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = a["bbox"]
                W, H = im["width"], im["height"]
                lines.append(f"{a['category_id'] - 1} {(x + w / 2) / W:.7f} {(y + h / 2) / H:.7f} {w / W:.7f} {h / H:.7f}")
        (root / "labels" / "val" / im["file_name"].replace(".jpg", ".txt")).write_text("\n".join(lines))
    (root / "d.yaml").write_text("path: .\nval: images/val\nnames: [rectangle, ellipse, triangle]\n")
    yolo = load_dataset(root / "d.yaml", split="val")
    assert len(yolo) == len(coco) == 8 and yolo.report.ok and coco.report.ok
    for rc, ry in zip(coco.records, yolo.records):
        assert (rc.width, rc.height) == (ry.width, ry.height)
        np.testing.assert_allclose(ry.boxes, rc.boxes, atol=1e-3)
        np.testing.assert_array_equal(ry.labels, rc.labels)


# ------------------------------------------------------------------------------------------ detection


def test_load_dataset_detects_formats(tmp_path):
    from rtmdet.data.synthetic import make_shapes_dataset

    ann_file = make_shapes_dataset(tmp_path / "c", num_images=3, image_size=64, split="val2017")
    a = load_dataset(tmp_path / "c", split="val2017")  # folder with annotations/instances_<split>.json
    b = load_dataset(ann_file)  # the json itself; images found under images/<split>
    assert len(a) == len(b) == 3 and a.report.ok and b.report.ok
    assert a.records[0].path == b.records[0].path
    root, y = make_yolo(tmp_path)
    assert len(load_dataset(y, split="val")) == 3
    assert len(load_dataset(root, split="val")) == 3
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="cannot tell"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing")


def test_relative_dataset_paths_load_what_absolute_ones_do(tmp_path, monkeypatch):
    """`--data my_data` (relative to the working folder) for every layout: the same images and
    boxes as the absolute path (a YOLO folder without a yaml once looked in my_data/my_data)."""
    import os
    from pathlib import Path

    from rtmdet.data.synthetic import make_shapes_dataset
    from rtmdet.data.synthetic_rotated import make_rotated_shapes_dataset
    make_shapes_dataset(tmp_path / "coco", num_images=2, image_size=64, split="val")
    root, y = make_yolo(tmp_path)
    (tmp_path / "yolo_folder").mkdir()
    os.rename(root / "images", tmp_path / "yolo_folder" / "images")
    os.rename(root / "labels", tmp_path / "yolo_folder" / "labels")
    (tmp_path / "yolo_folder" / "classes.txt").write_text("a\nb\nc\n")
    make_yolo(tmp_path / "again")
    make_rotated_shapes_dataset(tmp_path / "dota", num_images=2, image_size=64, split="val", fmt="dota")
    make_rotated_shapes_dataset(tmp_path / "obb", num_images=2, image_size=64, split="val", fmt="yolo-obb")
    monkeypatch.chdir(tmp_path)
    cases = [("coco", {}), ("coco/annotations/instances_val.json", {}), ("again/yolo/data.yaml", {}),
             ("again/yolo", {}), ("yolo_folder", {}), ("dota", {"kind": "rotated"}), ("obb", {"kind": "rotated"})]
    for rel, kw in cases:
        a, b = load_dataset(Path(rel), split="val", **kw), load_dataset(tmp_path / rel, split="val", **kw)
        assert len(a) == len(b) > 0, rel
        for ra, rb in zip(a.records, b.records):
            assert os.path.samefile(a.image_path(ra), b.image_path(rb)), rel
            np.testing.assert_array_equal(ra.boxes, rb.boxes)
