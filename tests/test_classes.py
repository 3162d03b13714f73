"""`predict(classes=...)` / `rtmdet predict --classes`: only the classes asked for, as a model of
only those classes would detect them. Checked against the unrestricted result filtered by label
(where the nms_pre / max_per_img budgets do not bind the two are the same set), and, where
max_per_img binds, against the best `max_per_img` of that filtered set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import DET_FIX, INS_FIX, load_fixture, need

import rtmdet
from rtmdet.cli import main
from rtmdet.inference.classes import class_indices


def _rows(d) -> np.ndarray:
    """(N,6) label, score, box rows in a canonical order (so ties in score cannot reorder)."""
    d = d.numpy()
    rows = np.concatenate([d.labels[:, None].astype(np.float64), d.scores[:, None], d.boxes], 1)
    return rows[np.lexsort(rows.T[::-1])] if len(rows) else rows.reshape(0, 6)


def _only(d, keep):
    return d.select(np.isin(d.numpy().labels, keep))


@pytest.fixture(scope="module")
def fixture_model_and_image():
    model = rtmdet.load(str(need(DET_FIX / "weights.pth")))
    img = load_fixture(DET_FIX / "predict_square.pth")["image_bgr"].numpy()
    return model, img


def test_names_and_indices():
    names = ["person", "car", "dog"]
    assert class_indices(["dog", 0, "1", np.int64(2)], names) == [0, 1, 2]
    assert class_indices("car", names) == [1] and class_indices(2, names) == [2]
    for bad, msg in ((["cat"], "no class named 'cat'"), ([3], "not a class index"), ([-1], "not a class index"),
                     ([True], "neither"), ([1.5], "neither"), ([], "at least one")):
        with pytest.raises(ValueError, match=msg):
            class_indices(bad, names)


def test_same_as_filtering_when_the_budgets_do_not_bind(fixture_model_and_image):
    model, img = fixture_model_and_image  # the fixture weights score everything below 0.031
    full = model.predict(img, score_thr=0.02, max_per_img=1000, imgsz=320)
    keep = sorted(set(full.numpy().labels.tolist()))[:2]
    assert len(keep) == 2
    only = model.predict(img, score_thr=0.02, max_per_img=1000, imgsz=320,
                         classes=[model.class_names[keep[0]], keep[1]])
    assert len(only) and set(only.numpy().labels.tolist()) == set(keep)
    np.testing.assert_array_equal(_rows(only), _rows(_only(full, keep)))
    assert torch.all(only.scores[:-1] >= only.scores[1:])  # still best first


def test_max_per_img_goes_to_the_classes_asked_for(fixture_model_and_image):
    """The 10 best detections of all classes hold few of the most frequent class; asked for
    that class alone, all 10 go to it: the best 10 of its own."""
    model, img = fixture_model_and_image
    unbounded = model.predict(img, score_thr=0.02, max_per_img=100000, nms_pre=-1, imgsz=320)
    top = model.predict(img, score_thr=0.02, max_per_img=10, imgsz=320)
    counts = np.bincount(unbounded.numpy().labels)
    label = int(counts.argmax())
    mine = _only(unbounded, [label])
    assert len(mine) > 10 > len(_only(top, [label]))
    only = model.predict(img, score_thr=0.02, max_per_img=10, imgsz=320, classes=[label])
    assert len(only) == 10
    best = mine.select(torch.argsort(mine.scores, descending=True, stable=True)[:10])
    np.testing.assert_array_equal(np.sort(only.numpy().scores), np.sort(best.numpy().scores))
    # every detection returned is one of the unbounded run's detections of that class
    mine_rows = {tuple(r) for r in _rows(mine)}
    assert all(tuple(r) in mine_rows for r in _rows(only))


def test_graph_with_nms_inside_drops_the_other_classes(fixture_model_and_image, tmp_path):
    pytest.importorskip("onnxruntime")
    from rtmdet.deploy.onnx import export_onnx
    from rtmdet.inference import Detector
    model, img = fixture_model_and_image
    path = export_onnx(model, tmp_path / "m.onnx", imgsz=320, nms=True)
    det = Detector(path)
    full = det.predict(img, score_thr=0.02)
    keep = sorted(set(full.numpy().labels.tolist()))[:1]
    only = det.predict(img, score_thr=0.02, classes=keep)
    assert len(only) and np.array_equal(_rows(only), _rows(_only(full, keep)))


def test_masks_follow_the_selection():
    model = rtmdet.load(str(need(INS_FIX / "weights.pth")))
    img = load_fixture(INS_FIX / "predict_square.pth")["image_bgr"].numpy()
    knobs = dict(score_thr=0.012, max_per_img=100000, nms_pre=-1, imgsz=320)
    full = model.predict(img, **knobs)
    keep = [int(np.bincount(full.numpy().labels).argmax())]
    only = model.predict(img, **knobs, classes=keep)
    ref = _only(full, keep)
    assert len(only) == len(ref) > 1
    assert torch.equal(only.scores, ref.scores) and torch.equal(only.boxes, ref.boxes)
    assert torch.equal(only.masks, ref.masks)


def test_cli_classes(tmp_path, capsys):
    import cv2
    weights = need(DET_FIX / "weights.pth")
    img = load_fixture(DET_FIX / "predict_square.pth")["image_bgr"].numpy()
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = tmp_path / "out"
    names = rtmdet.load(str(weights)).class_names
    assert main(["predict", str(tmp_path / "a.png"), "--weights", str(weights), "--save-txt", "--save-dir", str(out),
                 "--imgsz", "320", "--score-thr", "0.02", "--classes", names[35], "9"]) == 0
    labels = [int(line.split()[0]) for line in (out / "labels" / "a.txt").read_text().splitlines()]
    assert set(labels) == {9, 35}  # the fixture weights find both at this threshold (and 12 more classes)
    assert main(["predict", str(tmp_path / "a.png"), "--weights", str(weights), "--classes", "unicorn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no class named 'unicorn'" in err[0]
