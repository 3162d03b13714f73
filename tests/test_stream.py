"""`model.stream(source)`: what `rtmdet predict SOURCE` names (images, folders, globs, videos,
cameras, lists), predicted in batches and handed out one frame at a time."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.inference.stream import Frame

KNOBS = dict(score_thr=0.0, max_per_img=5)


@pytest.fixture(scope="module")
def model(tiny3_weights):
    return rtmdet.load(tiny3_weights)


def _img(seed, shape=(48, 64, 3)):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """a.png, b.png, c.avi (4 frames), d.png, e.jpg (corrupt): in that (sorted) order."""
    cv2.imwrite(str(tmp_path / "a.png"), _img(1))
    cv2.imwrite(str(tmp_path / "b.png"), _img(2, (40, 70, 3)))
    w = cv2.VideoWriter(str(tmp_path / "c.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(4):
        w.write(_img(10 + i))
    w.release()
    cv2.imwrite(str(tmp_path / "d.png"), _img(3))
    (tmp_path / "e.jpg").write_bytes(b"not a jpeg")
    return tmp_path


def _decoded(path):
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


def _same(a, b):
    for k in ("boxes", "scores", "labels"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_frames_in_order_equal_predict_on_the_same_batches(model, folder):
    skipped = []
    frames = list(model.stream(folder, batch_size=2, on_skip=lambda item, msg: skipped.append((item, msg)),
                               **KNOBS))
    assert all(isinstance(f, Frame) for f in frames)
    names = [f.source.replace(str(folder) + "/", "") for f in frames]
    assert names == ["a.png", "b.png", "c.avi#0", "c.avi#1", "c.avi#2", "c.avi#3", "d.png"]
    assert [f.index for f in frames] == [None, None, 0, 1, 2, 3, None]
    assert [f.detections.source for f in frames] == [f.source for f in frames]
    assert skipped == [(folder / "e.jpg", f"{folder / 'e.jpg'}: not a readable image (corrupt or unsupported format)")]
    # the same batches built by hand: [a, b], the video's [0, 1] and [2, 3], then [d] (e unreadable)
    images = [cv2.imread(str(folder / n)) for n in ("a.png", "b.png", "d.png")]
    video = _decoded(folder / "c.avi")
    expected = (model.predict(images[:2], **KNOBS) + model.predict(video[:2], **KNOBS)
                + model.predict(video[2:], **KNOBS) + model.predict(images[2:], **KNOBS))
    pixels = images[:2] + video + images[2:]
    for f, e, img in zip(frames, expected, pixels):
        _same(f.detections, e)
        assert np.array_equal(f.image, img)
    assert sum(len(f.detections) for f in frames) > 0


def test_vid_stride_lists_and_a_detector(model, folder, tiny3_weights):
    frames = list(model.stream([str(folder / "c.avi"), folder / "a.png"], batch_size=1, vid_stride=3,
                               **KNOBS))
    assert [f.source.rsplit("/", 1)[1] for f in frames] == ["c.avi#0", "c.avi#3", "a.png"]
    video = _decoded(folder / "c.avi")
    assert np.array_equal(frames[1].image, video[3])
    det = rtmdet.Detector(tiny3_weights, fuse=False)  # the model's arithmetic, not BN folded
    pairs = list(zip(det.stream(folder / "c.avi", batch_size=2, **KNOBS),
                     model.stream(folder / "c.avi", batch_size=2, **KNOBS)))
    assert len(pairs) == 4
    for a, b in pairs:
        assert a.source == b.source
        _same(a.detections, b.detections)


def test_frames_are_computed_as_they_are_taken(model, folder):
    """An endless camera must not be read to its end first: one batch per step."""
    calls = []
    real = model.predict

    class Counting:
        device = torch.device("cpu")

        def predict(self, images, **kw):
            calls.append(len(images))
            return real(images, **kw)
    it = rtmdet.inference.stream.stream(Counting(), folder / "c.avi", batch_size=2, **KNOBS)
    assert calls == []
    next(it)
    assert calls == [2]
    next(it), next(it)
    assert calls == [2, 2]


def test_bad_sources_fail_before_any_work(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no images or videos found"):
        model.stream(tmp_path / "nothing*.jpg")
    with pytest.raises(TypeError, match="arrays go to predict"):
        model.stream(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="batch_size and vid_stride must be >= 1"):
        model.stream(tmp_path, batch_size=0)


def test_an_unopenable_video_is_skipped_with_one_message(model, tmp_path, caplog):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    cv2.imwrite(str(tmp_path / "x.png"), _img(5))
    frames = list(model.stream(tmp_path, **KNOBS))
    assert [f.source.rsplit("/", 1)[1] for f in frames] == ["x.png"]
    assert [r.getMessage() for r in caplog.records if "broken.mp4" in r.getMessage()] == \
        [f"skipped {tmp_path / 'broken.mp4'}: cannot be opened (not a readable video, stream or camera)"]
