"""The shared host threads (`rtmdet.host_pool`): order, errors, nesting, forks, and the readers
that use them giving what a plain loop gives."""
from __future__ import annotations

import os
import select
import threading
import time

import cv2
import numpy as np
import pytest

from helpers import model_with_boxes
from rtmdet.data.images import ImageReadError, read_image
from rtmdet.host_pool import ENV, host_map, host_threads
from rtmdet.inference.stream import read_images


@pytest.fixture
def threads(monkeypatch):
    def set_threads(n):
        monkeypatch.setenv(ENV, str(n))
    return set_threads


def test_results_in_order_and_side_by_side(threads):
    threads(2)
    meet = threading.Barrier(2, timeout=10)  # breaks (an error) unless two tasks run at once

    def work(x):
        if x < 2:
            meet.wait()
        time.sleep(0.001 * (5 - x))  # later items finish first
        return x * x, threading.get_ident()

    out = host_map(work, range(5))
    assert [v for v, _ in out] == [x * x for x in range(5)]
    assert threading.get_ident() not in {t for _, t in out}


def test_one_thread_is_the_plain_loop(threads):
    threads(1)
    assert host_threads() == 1
    assert host_map(lambda x: threading.get_ident(), range(4)) == [threading.get_ident()] * 4


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_names_the_variable(threads, value):
    threads(value)
    with pytest.raises(ValueError, match=ENV):
        host_threads()


def test_default_is_the_usable_cores_at_most_8(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert host_threads() == max(1, min(8, len(os.sched_getaffinity(0))))


def test_first_error_in_order_is_raised_after_every_task_finished(threads):
    threads(3)
    finished = []

    def work(x):
        if x == 2:
            time.sleep(0.2)  # still running when the failures happen
            finished.append(x)
            return x
        if x in (1, 3):
            raise KeyError(f"item {x}")
        return x

    with pytest.raises(KeyError, match="item 1"):
        host_map(work, range(5))
    assert finished == [2]  # nothing writes into a caller's buffer after the error


def test_nested_calls_run_on_the_pool_thread(threads):
    threads(2)

    def outer(x):
        me = threading.get_ident()
        inner = host_map(lambda y: (x * 10 + y, threading.get_ident()), range(3))
        assert {t for _, t in inner} == {me}  # no task waits on tasks queued behind it
        return [v for v, _ in inner]

    got = []
    caller = threading.Thread(target=lambda: got.append(host_map(outer, range(4))), daemon=True)
    caller.start()
    caller.join(30)  # a deadlock fails here instead of hanging the suite
    assert got == [[[10 * x + y for y in range(3)] for x in range(4)]]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_pool_of_its_own(threads):
    """A DataLoader worker forked after the parent used the pool: the parent's threads do not
    exist there, and a call must not wait for them forever."""
    threads(2)
    assert host_map(lambda x: x + 1, range(4)) == [1, 2, 3, 4]  # the parent's pool exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            ok = host_map(lambda x: x * 2, range(6)) == [0, 2, 4, 6, 8, 10]
            os.write(write, b"ok" if ok else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 30)
    got = os.read(read, 16) if ready else b"hung"
    os.close(read)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert got == b"ok"


def _write_images(folder, n):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8))
        paths.append(p)
    return paths


@pytest.mark.parametrize("n", [1, 2, 4])
def test_read_images_gives_the_plain_loops_result(tmp_path, threads, n):
    threads(n)
    paths = _write_images(tmp_path, 7)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    items = paths[:2] + [tmp_path / "empty.jpg"] + paths[2:5] + [tmp_path / "junk.png", tmp_path / "gone.jpg"] + \
        paths[5:]
    ok, arrays, bad = read_images(iter(items))  # any iterable, read once
    assert ok == paths
    assert all(np.array_equal(a, cv2.imread(str(p))) for a, p in zip(arrays, paths))
    assert [f for f, _ in bad] == [tmp_path / "empty.jpg", tmp_path / "junk.png", tmp_path / "gone.jpg"]
    assert all(isinstance(e, ImageReadError) for _, e in bad)
    assert "empty file" in str(bad[0][1]) and "no such file" in str(bad[2][1])


def test_the_inference_loop_raises_the_first_unreadable_file(tmp_path, threads):
    import rtmdet
    threads(3)
    paths = _write_images(tmp_path, 4)
    (tmp_path / "bad1.png").write_bytes(b"x")
    (tmp_path / "bad2.png").write_bytes(b"y")
    model = rtmdet.create("rtmdet-tiny", num_classes=2).eval()
    with pytest.raises(ImageReadError, match="bad1"):
        model.predict(paths[:2] + [tmp_path / "bad1.png", tmp_path / "bad2.png"] + paths[2:], imgsz=64)
    got = model.predict(paths, imgsz=64, batch_size=4)
    ref = model.predict([read_image(p) for p in paths], imgsz=64, batch_size=4)
    assert all(a.boxes.equal(b.boxes) and a.scores.equal(b.scores) for a, b in zip(got, ref))


@pytest.mark.parametrize("ahead", [False, True])
def test_validation_reads_side_by_side_and_skips_what_became_unreadable(tmp_path, threads, monkeypatch,
                                                                        caplog, ahead):
    """`predict_dataset`: the records in the order of a one-thread run, reading ahead or not (on
    a GPU it reads the next batch while this one runs); a file broken after the dataset was
    loaded is logged and scored as no detections."""
    import json
    import logging

    import rtmdet.eval.validate as validate
    from rtmdet.data.datasets import load_dataset
    root = tmp_path / "c"
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(5)
    names = [f"{i}.png" for i in range(5)]
    for n in names:
        cv2.imwrite(str(root / "images" / "val" / n), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    coco = {"images": [{"id": i + 1, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 30, 20],
                             "area": 600, "iscrowd": 0} for i in range(5)],
            "categories": [{"id": 1, "name": "block"}]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    ds = load_dataset(root, split="val")
    (root / "images" / "val" / "2.png").write_bytes(b"broken since")
    model = model_with_boxes(["block"], 64)
    kw = dict(batch_size=2, progress=False, imgsz=64)
    threads(1)
    ref = validate.predict_dataset(model, ds, **kw)
    threads(3)
    monkeypatch.setattr(validate, "on_accelerator", lambda m: ahead)
    with caplog.at_level(logging.WARNING, logger="rtmdet"):
        got = validate.predict_dataset(model, ds, **kw)
    assert [r["image_id"] for r in got] == [r["image_id"] for r in ref] == [1, 2, 3, 4, 5]
    for a, b in zip(got, ref):
        assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    assert len(got[2]["scores"]) == 0 and len(got[0]["scores"]) > 0
    assert any("2.png" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
