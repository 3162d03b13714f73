"""Phone photos carry an EXIF orientation; OpenCV turns such a picture when it decodes it, so
the size a dataset records (from the header, fast) must be the turned one, or every YOLO/DOTA
label of a portrait photo lands in the wrong place."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from rtmdet.data.datasets import load_dataset
from rtmdet.data.files import read_image_size
from rtmdet.data.loader import load_image


def _save(path, orientation, size=(80, 40)):
    """A w x h picture (a white block in its top-left quarter) saved with an EXIF orientation."""
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[: h // 2, : w // 2] = 255
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_recorded_size_is_the_decoded_size(tmp_path, ext, orientation):
    path = _save(tmp_path / f"o{orientation}.{ext}", orientation)
    decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert read_image_size(path) == (decoded.shape[1], decoded.shape[0])


def test_yolo_labels_of_a_turned_photo_land_on_the_object(tmp_path):
    """A portrait photo stored landscape with orientation 6 (turn 90 degrees clockwise): its
    label, normalised to the turned 40 x 80 picture, must come out in that picture's pixels."""
    root = tmp_path / "d"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    img = _save(root / "images" / "val" / "p.jpg", 6, size=(80, 40))
    decoded = load_image(str(img))
    assert decoded.shape[:2] == (80, 40)  # turned: 80 high, 40 wide
    # the white block after the turn: columns 20..40, rows 0..40 of the 40 x 80 picture
    ys, xs = np.nonzero(decoded[..., 0] > 128)
    assert abs(xs.min() - 20) <= 1 and xs.max() == 39 and ys.min() == 0 and abs(ys.max() - 39) <= 1
    (root / "labels" / "val" / "p.txt").write_text("0 0.75 0.25 0.5 0.5\n")  # cx cy w h of that block
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames: [block]\n")
    rec = load_dataset(root / "data.yaml", split="val").records[0]
    assert (rec.width, rec.height) == (40, 80)
    np.testing.assert_allclose(rec.boxes[0], [20, 0, 40, 40], atol=1e-4)


def test_annotations_for_another_size_are_reported_once(tmp_path, caplog):
    """A COCO json written by a tool that ignored the EXIF orientation: its width/height (and
    boxes) are the stored picture's, not the turned one the model sees. Training and
    evaluation say so, once per image."""
    import json
    import logging

    import rtmdet
    from rtmdet.data.loader import TrainDataset
    from rtmdet.eval.validate import predict_dataset
    root = tmp_path / "c"
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    _save(root / "images" / "val" / "p.jpg", 6, size=(80, 40))
    _save(root / "images" / "val" / "q.jpg", 1, size=(80, 40))
    coco = {"images": [{"id": 1, "file_name": "p.jpg", "width": 80, "height": 40},
                       {"id": 2, "file_name": "q.jpg", "width": 80, "height": 40}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 40, 20],
                             "area": 800, "iscrowd": 0} for i in (1, 2)],
            "categories": [{"id": 1, "name": "block"}]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    ds = load_dataset(root, split="val")
    with caplog.at_level(logging.WARNING, logger="rtmdet"):
        train_set = TrainDataset(ds, img_scale=64)
        for _ in range(2):
            train_set.load_sample(0)
            train_set.load_sample(1)
        predict_dataset(rtmdet.create("rtmdet-tiny", num_classes=1), ds, progress=False, imgsz=64)
    said = [r.getMessage() for r in caplog.records if "annotations are for" in r.getMessage()]
    assert len(said) == 1 and "p.jpg" in said[0], said
    assert "80x40 image but it reads as 40x80 (turned by its EXIF orientation?)" in said[0]
