"""Crops of detections: `Detections.crop_windows` / `crops` (every pixel a box touches, nothing
else) and `rtmdet predict --save-crop` (one file per detection, named by class and source)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import model_with_boxes, save_model
from rtmdet.cli import main
from rtmdet.detections import Detections


def _touched(lo: float, hi: float, size: int) -> list[int]:
    """Pixel indices i (pixel i spans [i, i+1)) that the interval [lo, hi] overlaps with
    positive length inside [0, size); a degenerate interval touches the pixel it lies in."""
    lo, hi = max(lo, 0.0), min(hi, float(size))
    hit = [i for i in range(size) if min(hi, i + 1) - max(lo, i) > 0]
    if not hit:  # zero width, or outside the image: the nearest pixel
        hit = [min(max(int(np.floor(lo)), 0), size - 1)]
    return hit


def test_windows_are_the_pixels_each_box_touches():
    rng = np.random.default_rng(0)
    h, w = 37, 53
    n = 400
    x0 = rng.uniform(-10, w + 5, n)
    y0 = rng.uniform(-10, h + 5, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0, 30, n), y0 + rng.uniform(0, 30, n)], 1)
    boxes[:40, 2] = boxes[:40, 0]                    # zero width
    boxes[40:80] = np.round(boxes[40:80])            # on pixel edges
    boxes[80:90] = [[0, 0, w, h]] * 10               # the whole image
    d = Detections(torch.from_numpy(boxes).float(), torch.rand(n), torch.zeros(n, dtype=torch.long),
                   image_shape=(h, w))
    boxes32 = d.boxes.double().numpy()  # the float32 boxes the windows are made from
    for (a, b, c, e), (bx0, by0, bx1, by1) in zip(d.crop_windows(), boxes32):
        cols, rows = _touched(bx0, bx1, w), _touched(by0, by1, h)
        assert (a, c) == (cols[0], cols[-1] + 1) and (b, e) == (rows[0], rows[-1] + 1)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    crops = d.crops(img)
    for (a, b, c, e), crop in zip(d.crop_windows(), crops):
        assert np.array_equal(crop, img[b:e, a:c]) and crop.size > 0
    crops[85][:] = 0
    assert img.any(), "crops are copies"
    with pytest.raises(ValueError, match="image is 10x10 but the detections are of a 53x37 image"):
        d.crops(np.zeros((10, 10, 3), np.uint8))


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory):
    """A random 3-class model whose class names are not folder names as they stand (boxes of a
    few pixels from every prior: `model_with_boxes`)."""
    m = model_with_boxes(["cat/dog", "..", "a:b*c"], imgsz=64)
    return str(save_model(m, tmp_path_factory.mktemp("odd") / "m.pth"))


def _img(seed, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_save_crop_writes_one_file_per_detection(odd_names, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    cv2.imwrite(str(src / "a" / "x.png"), _img(1))
    cv2.imwrite(str(src / "clip_0.jpg"), _img(2))  # its crops' names may meet the video's
    v = cv2.VideoWriter(str(src / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(2):
        v.write(_img(10 + i))
    v.release()
    out = tmp_path / "out"
    assert main(["predict", str(src), "--weights", odd_names, "--save-dir", str(out), "--save-json",
                 "--score-thr", "0.0", "--max-det", "3", "--save-crop", "--no-save"]) == 0
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 4
    folders = {"cat/dog": "cat_dog", "..": "_", "a:b*c": "a_b_c"}
    listed = []
    for p in preds:
        assert len(p["crops"]) == len(p["detections"]) == 3
        source = p["source"]
        frame = _read_frame(src / "clip.avi", int(source.split("#")[1])) if "#" in source else \
            cv2.imread(source)
        for det, name in zip(p["detections"], p["crops"]):
            assert Path(name).parts[:2] == ("crops", folders[det["name"]])
            crop = cv2.imread(str(out / name))
            x0, y0 = int(np.floor(max(det["box"][0], 0))), int(np.floor(max(det["box"][1], 0)))
            assert crop.shape[0] >= 1 and crop.shape[1] >= 1
            if name.endswith(".png"):  # lossless: exactly the source's pixels
                assert np.array_equal(crop, frame[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]])
            listed.append(name)
    on_disk = sorted(str(f.relative_to(out)) for f in (out / "crops").rglob("*") if f.is_file())
    assert sorted(listed) == on_disk and len(set(listed)) == 12, "every crop has its own file"
    assert not any(f.suffix in (".png", ".jpg") for f in out.glob("*")), "--no-save: no drawn images"
    assert sum("/clip_1_" in n for n in listed) == 3, "the video's frame 1"


def test_crop_names_never_repeat_in_a_run():
    from rtmdet.cli.predict import crop_names
    d = Detections(torch.zeros(3, 4), torch.ones(3), torch.tensor([0, 1, 0]), class_names=["a/b", "c"])
    taken = set()
    first = crop_names(d, "dir/clip_0", ".jpg", taken)    # an image dir/clip_0.jpg
    again = crop_names(d, "dir/clip_0", ".jpg", taken)    # frame 0 of a video dir/clip.mp4
    assert [str(n) for n in first] == ["crops/a_b/dir/clip_0_0.jpg", "crops/c/dir/clip_0_1.jpg",
                                       "crops/a_b/dir/clip_0_2.jpg"]
    assert [str(n) for n in again] == ["crops/a_b/dir/clip_0_0-2.jpg", "crops/c/dir/clip_0_1-2.jpg",
                                       "crops/a_b/dir/clip_0_2-2.jpg"]
    assert crop_names(d, "dir/clip_0", ".png", taken)[0].name == "clip_0_0.png"


def _read_frame(path, i):
    cap = cv2.VideoCapture(str(path))
    for _ in range(i + 1):
        ok, frame = cap.read()
    cap.release()
    assert ok
    return frame
