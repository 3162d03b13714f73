"""The pipelined inference path (`rtmdet.inference.prefetch`): the same results as a plain loop,
in order, with errors raised where a plain loop raises them."""
from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from rtmdet.api import build_model
from rtmdet.cli import main
from rtmdet.data.images import ImageReadError
from rtmdet.inference import TorchBackend
from rtmdet.inference.loop import run_inference
from rtmdet.inference.prefetch import BackgroundWriter, on_accelerator, ordered_map
from rtmdet.presets import model_config

from helpers import DET_FIX, load_fixture, need


def test_ordered_map_keeps_order_and_runs_ahead():
    started = []

    def slow(i):
        started.append(i)
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        return i * i

    it = ordered_map(slow, range(10), ahead=3)
    assert next(it) == 0
    time.sleep(0.1)
    assert max(started) == 3  # three items ahead of the one taken, not more
    assert list(it) == [i * i for i in range(1, 10)]
    assert list(ordered_map(slow, range(4), ahead=0)) == [0, 1, 4, 9]


def test_ordered_map_raises_at_the_failing_item_and_stops():
    ran = []

    def fn(i):
        ran.append(i)
        if i == 2:
            raise ValueError("bad item 2")
        return i

    got = []
    with pytest.raises(ValueError, match="bad item 2"):
        for v in ordered_map(fn, range(100), ahead=2):
            got.append(v)
    assert got == [0, 1] and max(ran) <= 4  # nothing runs far past the failure


def test_background_writer_order_and_first_error():
    done = []
    with BackgroundWriter(depth=2) as w:
        for i in range(6):
            w.submit(done.append, i)
    assert done == list(range(6))

    def fail(i):
        if i == 1:
            raise OSError(28, "No space left on device")
        done.append(i)
        time.sleep(0.01)

    done.clear()
    w = BackgroundWriter()
    with pytest.raises(OSError, match="No space"):
        with w:
            for i in range(5):
                w.submit(fail, i)
            w.close()
    assert done == [0]  # the jobs queued after the failed one did not run
    assert threading.active_count() < 50


@pytest.fixture(scope="module")
def backend():
    torch.manual_seed(0)
    return TorchBackend(build_model(model_config("rtmdet-tiny")).eval())


def test_prefetch_gives_the_plain_loop_results(backend, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):  # different sizes: different letterboxes per batch
        img = rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
        paths.append(tmp_path / f"{i}.png")
    kw = dict(batch_size=3, imgsz=64, score_thr=0.001)
    plain = run_inference(backend, paths, prefetch=False, **kw)
    ahead = run_inference(backend, paths, prefetch=True, **kw)
    assert len(plain) == len(ahead) == 7 and any(len(d) for d in plain)
    for a, b in zip(plain, ahead):
        assert a.source == b.source
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
        assert torch.equal(a.labels, b.labels)
    (tmp_path / "5.png").write_bytes(b"not a picture")
    with pytest.raises(ImageReadError, match="5.png"):
        run_inference(backend, paths, prefetch=True, **kw)


@pytest.mark.parametrize("pipelined", [False, True])
def test_video_batches_give_the_frame_by_frame_results(tmp_path, monkeypatch, pipelined):
    """--batch 3 (frames read ahead and written behind on threads when `pipelined`, as on a
    GPU) gives every frame, in order, with the detections of --batch 1."""
    import rtmdet.inference.prefetch as prefetch
    monkeypatch.setattr(prefetch, "on_accelerator", lambda model: pipelined)
    frame = load_fixture(DET_FIX / "predict_portrait.pth")["image_bgr"].numpy()
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5,
                        (frame.shape[1], frame.shape[0]))
    for i in range(7):
        w.write(np.roll(frame, 9 * i, axis=1))  # every frame different
    w.release()
    preds = {}
    for batch in (1, 3):
        out = tmp_path / f"out{batch}"
        rc = main(["predict", str(video), "--weights", str(need(DET_FIX / "weights.pth")),
                   "--score-thr", "0.005", "--max-det", "20", "--save-dir", str(out), "--save-json",
                   "--batch", str(batch)])
        assert rc == 0
        preds[batch] = json.loads((out / "predictions.json").read_text())
        cap = cv2.VideoCapture(str(out / "clip.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
        cap.release()
    assert [p["source"] for p in preds[3]] == [f"{video}#{i}" for i in range(7)]
    assert len({json.dumps(p["detections"]) for p in preds[1]}) > 1  # the frames differ
    for a, b in zip(preds[1], preds[3]):
        assert len(a["detections"]) == len(b["detections"])
        for da, db in zip(a["detections"], b["detections"]):
            assert da["label"] == db["label"]
            assert abs(da["score"] - db["score"]) < 1e-5
            assert np.allclose(da["box"], db["box"], atol=1e-3)


def test_on_accelerator():
    model = build_model(model_config("rtmdet-tiny"))
    assert not on_accelerator(model) and not on_accelerator(TorchBackend(model))
    assert not TorchBackend(model).accelerated
    with torch.device("meta"):
        meta = build_model(model_config("rtmdet-tiny"))
    assert on_accelerator(meta)  # anything but the CPU


def test_device_work_stays_on_the_calling_thread(backend, tmp_path, monkeypatch):
    """Reading ahead runs only the host part of pre-processing on the worker; moving to the
    device (and a CUDA graph's capture, in `infer_async`) happens on the caller's thread."""
    seen = {"host": set(), "device": set(), "infer": set()}
    for part in ("preprocess_host", "preprocess_device", "infer_async"):
        real = getattr(backend, part)

        def spy(*a, real=real, key=part.replace("preprocess_", "").replace("_async", "")):
            seen[key].add(threading.current_thread().name)
            return real(*a)
        monkeypatch.setattr(backend, part, spy)
    paths = []
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 50, 3), 20 * i, np.uint8))
        paths.append(tmp_path / f"{i}.png")
    run_inference(backend, paths, batch_size=2, imgsz=64, prefetch=True)
    main = threading.current_thread().name
    assert seen["device"] == seen["infer"] == {main}
    assert seen["host"] and main not in seen["host"]  # the later batches came from the worker
