"""`rtmdet predict` on URLs (an image downloaded, a video read through FFmpeg) and camera
indices, every N-th frame of a video (--vid-stride), and Ctrl-C: the run stops with 130 and
keeps every image and frame it finished."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import rtmdet
import rtmdet.cli.predict as predict_cli
from helpers import FileHandler, file_server
from rtmdet.cli import main
from rtmdet.data.images import ImageReadError, read_image
from rtmdet.sources import is_video, list_sources, output_names, source_label


@pytest.fixture
def weights(tiny3_weights):
    return tiny3_weights


def _img(seed):
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def _video(path, frames):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(frames):
        w.write(_img(10 + i))
    w.release()


def _run(weights, source, out, *extra):
    return main(["predict", str(source), "--weights", weights, "--save-dir", str(out), "--score-thr", "0.0",
                 "--max-det", "5", "--save-txt", "--save-json", *extra])


def _detections(out):
    """predictions.json without the fields that name the source."""
    return [p["detections"] for p in json.loads((out / "predictions.json").read_text())]


def test_source_kinds():
    assert list_sources("rtsp://cam.local/live") == ["rtsp://cam.local/live"]
    assert list_sources("7") == [7]
    assert is_video(7) and is_video("rtsp://h/live") and is_video("https://h/a/clip.mp4?t=1")
    assert not is_video("https://h/a/bus.JPG?x=1")
    names = output_names([Path("a.jpg"), "https://h/p/bus.jpg?x=1", "rtsp://h/live", 0], Path("."),
                         lambda f: ".txt")
    assert [str(n) for n in names] == ["a.txt", "bus.txt", "live.txt", "camera0.txt"]
    assert source_label(0) == "camera 0"


def test_image_and_video_urls_give_what_the_local_files_give(weights, tmp_path, capsys):
    local = tmp_path / "local"
    local.mkdir()
    cv2.imwrite(str(local / "bus.png"), _img(1))
    _video(local / "clip.avi", 3)
    assert _run(weights, local / "bus.png", tmp_path / "ref_img") == 0
    assert _run(weights, local / "clip.avi", tmp_path / "ref_vid") == 0
    with file_server() as base:
        FileHandler.files = {"bus.png": (local / "bus.png").read_bytes(),
                             "clip.avi": (local / "clip.avi").read_bytes()}
        assert _run(weights, f"{base}/img/bus.png", tmp_path / "url_img") == 0
        assert _run(weights, f"{base}/vid/clip.avi", tmp_path / "url_vid") == 0
        # the Python API reads a URL like a path
        model = rtmdet.load(weights)
        from_url = model.predict(f"{base}/img/bus.png", score_thr=0.0)
    assert torch.equal(from_url.boxes, model.predict(str(local / "bus.png"), score_thr=0.0).boxes)
    assert _detections(tmp_path / "url_img") == _detections(tmp_path / "ref_img")
    assert _detections(tmp_path / "url_vid") == _detections(tmp_path / "ref_vid")
    assert any(_detections(tmp_path / "ref_img")) and any(_detections(tmp_path / "ref_vid"))
    assert len(_detections(tmp_path / "url_vid")) == 3
    recs = json.loads((tmp_path / "url_vid" / "predictions.json").read_text())
    assert recs[0]["source"] == f"{base}/vid/clip.avi#0" and recs[0]["output"] == "clip.mp4#0"
    assert (tmp_path / "url_img" / "bus.png").is_file()
    assert (tmp_path / "url_img" / "labels" / "bus.txt").read_text() == \
        (tmp_path / "ref_img" / "labels" / "bus.txt").read_text()
    cap = cv2.VideoCapture(str(tmp_path / "url_vid" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_unreachable_urls_and_cameras_are_clear_errors(weights, tmp_path, capsys, caplog):
    with file_server() as base:
        FileHandler.files = {"half.png": cv2.imencode(".png", _img(2))[1].tobytes()}
        FileHandler.truncate_once = {"half.png"}
        with pytest.raises(ImageReadError, match="half.png: download failed"):
            read_image(f"{base}/half.png")
        with pytest.raises(ImageReadError, match="HTTP 404"):
            read_image(f"{base}/missing.jpg")
        assert _run(weights, f"{base}/missing.jpg", tmp_path / "o1") == 2
        assert "nothing could be read" in capsys.readouterr().err
        assert _run(weights, f"{base}/missing.mp4", tmp_path / "o2") == 2
        assert "missing.mp4" in capsys.readouterr().err
    assert _run(weights, "99", tmp_path / "o3") == 2
    assert "nothing could be read: camera 99" in capsys.readouterr().err
    assert "skipped camera 99: cannot be opened" in caplog.text
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in ("o1", "o2", "o3"))


def test_vid_stride_detects_on_every_nth_frame(weights, tmp_path, capsys):
    _video(tmp_path / "clip.avi", 7)
    assert _run(weights, tmp_path / "clip.avi", tmp_path / "all") == 0
    assert _run(weights, tmp_path / "clip.avi", tmp_path / "third", "--vid-stride", "3") == 0
    every = json.loads((tmp_path / "all" / "predictions.json").read_text())
    third = json.loads((tmp_path / "third" / "predictions.json").read_text())
    assert [r["source"].rsplit("#", 1)[1] for r in third] == ["0", "3", "6"]
    assert [r["output"] for r in third] == ["clip.mp4#0", "clip.mp4#1", "clip.mp4#2"]
    assert [r["detections"] for r in third] == [every[i]["detections"] for i in (0, 3, 6)]
    cap = cv2.VideoCapture(str(tmp_path / "third" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5 / 3, abs=0.01)
    frames = [int(line.split()[0]) for line in (tmp_path / "third" / "labels" / "clip.txt").read_text().splitlines()]
    assert frames == [i for i, r in zip((0, 3, 6), third) for _ in r["detections"]] and frames


class _InterruptedAt:
    """A model whose `calls`-th predict is cut short by Ctrl-C (KeyboardInterrupt)."""

    def __init__(self, model, calls):
        self.model, self.calls = model, calls

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, *a, **kw):
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return self.model.predict(*a, **kw)


@pytest.fixture(params=[False, True], ids=["inline", "pipelined"])
def interrupt_at(monkeypatch, request):
    """Arms `_InterruptedAt`; "pipelined" runs predict as on a GPU (reading ahead and writing
    behind on threads), so Ctrl-C also has threads to stop and writes to drain."""
    if request.param:
        import rtmdet.inference.prefetch as prefetch
        monkeypatch.setattr(prefetch, "on_accelerator", lambda model: True)

    def arm(calls):
        real = predict_cli.open_model
        monkeypatch.setattr(predict_cli, "open_model", lambda args: _InterruptedAt(real(args), calls))
    return arm


def test_ctrl_c_in_a_video_keeps_the_frames_done(weights, tmp_path, capsys, interrupt_at):
    _video(tmp_path / "clip.avi", 6)
    interrupt_at(5)  # four batches of one frame done (the random model finds boxes in 2 and 3)
    out = tmp_path / "out"
    assert _run(weights, tmp_path / "clip.avi", out, "--batch", "1") == 130
    assert capsys.readouterr().out.startswith("interrupted: 4 image(s)/frame(s)")
    recs = json.loads((out / "predictions.json").read_text())
    assert [r["source"].rsplit("#", 1)[1] for r in recs] == ["0", "1", "2", "3"]
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    frames = [int(line.split()[0]) for line in (out / "labels" / "clip.txt").read_text().splitlines()]
    assert frames == [i for i, r in enumerate(recs) for _ in r["detections"]] and frames
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


class _TerminatedAt(_InterruptedAt):
    """A model whose `calls`-th predict gets a real SIGTERM (kill, docker stop); before each
    call it notes what the --save-txt and --save-json temporary files hold so far."""

    def __init__(self, model, calls, out):
        super().__init__(model, calls)
        self.out, self.on_disk, self.json_on_disk = out, [], []

    def predict(self, *a, **kw):
        self.calls -= 1
        tmp = list(self.out.glob("labels/.clip.*.tmp.txt"))
        self.on_disk.append(tmp[0].read_text() if tmp else None)
        tmp = list(self.out.glob(".predictions.*.tmp.json"))
        self.json_on_disk.append(tmp[0].read_text() + "\n]" if tmp else None)
        if self.calls == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):  # the handler raises between two bytecodes of this loop
                pass
        return self.model.predict(*a, **kw)


def test_sigterm_in_a_video_keeps_the_frames_done_and_exits_143(weights, tmp_path, capsys, monkeypatch):
    """SIGTERM keeps what Ctrl-C keeps, exits with the shell's code for it; the labels and
    the json records stream to disk frame by frame (a camera watched for hours holds none in
    memory)."""
    _video(tmp_path / "clip.avi", 6)
    out = tmp_path / "out"
    real = predict_cli.open_model
    model = {}
    monkeypatch.setattr(predict_cli, "open_model",
                        lambda args: model.setdefault("m", _TerminatedAt(real(args), 5, out)))
    assert _run(weights, tmp_path / "clip.avi", out, "--batch", "1") == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    assert capsys.readouterr().out.startswith("interrupted: 4 image(s)/frame(s)")
    recs = json.loads((out / "predictions.json").read_text())
    assert [r["source"].rsplit("#", 1)[1] for r in recs] == ["0", "1", "2", "3"]
    assert int(cv2.VideoCapture(str(out / "clip.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    text = (out / "labels" / "clip.txt").read_text()
    frames = [int(line.split()[0]) for line in text.splitlines()]
    assert frames == [i for i, r in enumerate(recs) for _ in r["detections"]] and frames
    assert model["m"].on_disk[-1] == text  # frames 0-3 were on disk before frame 4 was asked for
    assert json.loads(model["m"].json_on_disk[-1]) == recs
    assert json.loads(model["m"].json_on_disk[0]) == []
    assert not [p for d in (out, out / "labels") for p in d.iterdir() if p.name.startswith(".")]


def test_ctrl_c_among_images_keeps_the_images_done_and_skips_the_rest(weights, tmp_path, capsys,
                                                                      interrupt_at):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        cv2.imwrite(str(src / f"im{i}.png"), _img(i))
    _video(src / "z.avi", 2)
    interrupt_at(3)
    out = tmp_path / "out"
    assert _run(weights, src, out, "--batch", "1") == 130
    assert capsys.readouterr().out.startswith("interrupted: 2 image(s)/frame(s)")
    recs = json.loads((out / "predictions.json").read_text())
    assert [Path(r["source"]).name for r in recs] == ["im0.png", "im1.png"]
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png", "labels", "predictions.json"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["im0.txt", "im1.txt"]


def test_ctrl_c_before_any_frame_leaves_no_video(weights, tmp_path, capsys, interrupt_at):
    _video(tmp_path / "clip.avi", 3)
    interrupt_at(1)
    out = tmp_path / "out"
    assert _run(weights, tmp_path / "clip.avi", out) == 130
    assert json.loads((out / "predictions.json").read_text()) == []
    assert not (out / "clip.mp4").exists() and not [p for p in out.iterdir() if p.name.startswith(".")]
