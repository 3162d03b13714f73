"""`rtmdet predict` outputs: one per source, never two sources on one name (the source's path
under the SOURCE folder is kept), videos inside folders, and exit 2 when nothing could be read."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from rtmdet.cli import main


@pytest.fixture
def weights(tiny3_weights):
    return tiny3_weights


def _img(seed):
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def _video(path, frames=3):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(frames):
        w.write(_img(10 + i))
    w.release()


def test_same_names_in_other_folders_or_formats_never_collide(weights, tmp_path, capsys):
    src = tmp_path / "src"
    for rel, seed in (("a/x.jpg", 1), ("b/x.jpg", 2), ("x.png", 3), ("x.jpg", 4)):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / rel), _img(seed))
    out = tmp_path / "out"
    assert main(["predict", str(src), "--weights", weights, "--save-dir", str(out), "--score-thr", "0.0",
                 "--max-det", "7", "--save-txt", "--save-json"]) == 0
    drawn = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.suffix in (".jpg", ".png"))
    assert drawn == ["a/x.jpg", "b/x.jpg", "x.jpg", "x.png"]
    labels = sorted(str(p.relative_to(out / "labels")) for p in (out / "labels").rglob("*.txt"))
    assert labels == ["a/x.txt", "b/x.txt", "x.jpg.txt", "x.png.txt"]
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 4
    for p in preds:  # each record names its source and its outputs
        rel = p["source"][len(str(src)) + 1:]
        assert p["output"] == rel
        lines = (out / p["labels"]).read_text().splitlines()
        assert len(lines) == len(p["detections"])  # nothing lost to an overwrite
    assert sum(len(p["detections"]) for p in preds) > 0


def test_videos_inside_a_folder_are_processed(weights, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "still.png"), _img(1))
    _video(src / "clip.avi")
    out = tmp_path / "out"
    assert main(["predict", str(src), "--weights", weights, "--save-dir", str(out), "--save-json",
                 "--save-txt", "--score-thr", "0.0", "--max-det", "2"]) == 0
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["source"].rsplit("/", 1)[-1] for p in preds] == ["still.png", "clip.avi#0", "clip.avi#1",
                                                               "clip.avi#2"]
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    frames = [int(line.split()[0]) for line in (out / "labels" / "clip.txt").read_text().splitlines()]
    assert frames == [i for i, p in enumerate(preds[1:]) for _ in p["detections"]]
    assert all(p["labels"] == "labels/clip.txt" and p["output"] == f"clip.mp4#{i}" for i, p in enumerate(preds[1:]))
    # a folder holding only videos
    only = tmp_path / "only"
    only.mkdir()
    _video(only / "v.avi", 2)
    assert main(["predict", str(only), "--weights", weights, "--save-dir", str(tmp_path / "o2")]) == 0
    assert "2 image(s)/frame(s)" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "o2").iterdir()] == ["v.mp4"]


def test_nothing_readable_is_exit_2(weights, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    assert main(["predict", str(bad), "--weights", weights, "--save-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing could be read" in err[0] and "bad.jpg" in err[0]
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "broken.mp4").write_bytes(b"not a video")
    assert main(["predict", str(tmp_path / "v"), "--weights", weights, "--save-dir", str(tmp_path / "o")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert list((tmp_path / "o").iterdir()) == []  # no empty video left behind


def test_without_save_json_nothing_accumulates(weights, tmp_path, monkeypatch, capsys):
    """A camera or stream can run for hours: without --save-json no per-frame record is built
    (no RLE encoding of masks either) or kept; the summary still counts every frame."""
    from rtmdet.cli.predict import Records
    from rtmdet.detections import Detections
    calls = []
    real = Detections.to_dict
    monkeypatch.setattr(Detections, "to_dict", lambda self: calls.append(1) or real(self))
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _img(1))
    _video(src / "clip.avi", frames=4)
    assert main(["predict", str(src), "--weights", weights, "--save-dir", str(tmp_path / "o"),
                 "--no-save", "--save-txt"]) == 0
    assert calls == [] and capsys.readouterr().out.startswith("5 image(s)/frame(s)")
    assert main(["predict", str(src), "--weights", weights, "--save-dir", str(tmp_path / "o"),
                 "--no-save", "--save-json"]) == 0
    assert len(calls) == 5
    with Records.open(None) as r:
        for _ in range(3):
            r.append({"x": 1})
    assert r.count == 3 and r.file is None
