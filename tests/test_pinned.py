"""Pinned staging buffers (`rtmdet.inference.pinned`): a buffer is never handed out while a copy
out of it may still run, a miss falls back to a plain array, and writing the batch into a buffer
gives the bytes the plain path gives. The CPU tests fake pinning and CUDA events."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.data.letterbox import letterbox_batch, stack_by_shape
from rtmdet.inference import TorchBackend
from rtmdet.inference.pinned import PinnedPool, batch_view
from rtmdet.inference.speed import SpeedOptions

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class FakeEvent:
    def __init__(self):
        self.done = False

    def query(self):
        return self.done


def fake_pool(max_buffers=4):
    events, made = [], []

    def event():
        events.append(FakeEvent())
        return events[-1]

    def alloc(n):
        made.append(n)
        return torch.empty(n, dtype=torch.uint8)
    return PinnedPool("cpu", max_buffers, alloc=alloc, event=event), events, made


def test_miss_then_allocated_on_refill_then_reused_only_after_the_copy():
    pool, events, made = fake_pool()
    assert pool.take(100) is None  # nothing yet: the caller writes a plain array
    pool.uploaded(None)  # the driving thread allocates what was missed
    assert made == [100]
    buf = pool.take(100)
    assert buf is not None and buf.numel() == 100
    pool.uploaded(buf)  # its copy is queued, not finished
    assert pool.take(100) is None  # the only buffer is still busy
    pool.refill()
    assert made == [100, 100]  # the second miss got a buffer of its own
    other = pool.take(100)
    assert other is not None and other.data_ptr() != buf.data_ptr()
    events[0].done = True
    pool.refill()
    again = pool.take(100)
    assert again is not None and again.data_ptr() == buf.data_ptr()


def test_smallest_fitting_buffer_and_replacement_when_full():
    pool, events, made = fake_pool(max_buffers=2)
    for n in (50, 200):
        pool.take(n)
        pool.refill()
    assert made == [50, 200] and pool.allocated == 2
    assert pool.take(40).numel() == 50  # the smallest that fits
    pool.uploaded(None)
    assert pool.take(300) is None  # larger than both: the smallest free one is replaced
    pool.refill()
    assert made == [50, 200, 300] and pool.allocated == 2
    assert pool.take(250).numel() == 300


def test_smallest_fit_found_anywhere_in_the_free_list():
    """Free buffers of different sizes in any order: the smallest that fits is handed out
    (picked by position, never by comparing tensors)."""
    pool, events, made = fake_pool()
    for n in (100, 300):
        pool.take(n)
        pool.refill()
    small = pool.take(100)
    pool.uploaded(small)
    events[-1].done = True
    pool.refill()  # free list now: the 300 buffer, then the 100 one
    assert pool.take(50).data_ptr() == small.data_ptr()
    assert pool.take(50).numel() == 300


def test_full_pool_with_every_buffer_busy_falls_back():
    pool, events, made = fake_pool(max_buffers=1)
    pool.take(10)
    pool.refill()
    buf = pool.take(10)
    pool.uploaded(buf)
    assert pool.take(10) is None
    pool.refill()  # full, and the one buffer still busy: nothing allocated
    assert made == [10] and pool.take(10) is None
    events[0].done = True
    pool.refill()
    assert pool.take(10) is not None


def test_take_from_many_threads_hands_each_buffer_out_once():
    pool, events, _ = fake_pool(max_buffers=4)
    bufs = []
    for _ in range(4):
        assert pool.take(64) is None
        pool.refill()
        bufs.append(pool.take(64))
    for b in bufs:
        pool.uploaded(b)
        events[-1].done = True
    pool.refill()
    got, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        got.append(pool.take(64))
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ptrs = [b.data_ptr() for b in got if b is not None]
    assert len(ptrs) == 4 and len(set(ptrs)) == 4


def test_letterbox_into_a_buffer_gives_the_same_bytes():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in [(300, 400), (64, 64), (500, 120)]]
    ref, ref_metas = letterbox_batch(imgs, (320, 320))
    buf = torch.full((3 * 3 * 320 * 320 + 7,), 7, dtype=torch.uint8)  # larger than needed, dirty
    out = batch_view(buf, (3, 3, 320, 320))
    got, metas = letterbox_batch(imgs, (320, 320), out=out)
    assert got is out and np.shares_memory(got, buf.numpy())
    assert np.array_equal(got, ref) and metas == ref_metas
    with pytest.raises(ValueError, match="out has shape"):
        letterbox_batch(imgs[:2], (320, 320), out=out)


def test_stack_into_a_buffer_gives_the_same_groups():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(2))
    c = rng.integers(0, 256, (20, 10, 3), dtype=np.uint8)
    imgs = [a, c, b, c[:, ::-1]]
    ref, ref_metas = stack_by_shape(imgs, (64, 64))
    flat = np.zeros(sum(i.nbytes for i in imgs), np.uint8)
    got, metas = stack_by_shape(imgs, (64, 64), out=flat)
    assert metas == ref_metas and [i for i, _ in got] == [i for i, _ in ref]
    for (_, x), (_, y) in zip(got, ref):
        assert np.array_equal(x, y) and np.shares_memory(x, flat)


@pytest.mark.parametrize("device_pre", [False, True])
def test_cpu_backend_uses_no_pool(device_pre):
    model = rtmdet.create("rtmdet-tiny", num_classes=3).eval()
    backend = TorchBackend(model, SpeedOptions(preprocess="device" if device_pre else "cpu"))
    img = np.full((50, 60, 3), 9, np.uint8)
    assert backend.preprocess_host([img], (64, 64))[-1] is None and backend._pinned_pool() is None


@pytest.mark.parametrize("device_pre", [False, True])
def test_backend_halves_through_a_pool_give_the_plain_batch(device_pre, monkeypatch):
    """The backend's use of the pool, run on the CPU with a fake one: each buffer is given back
    after its upload and recycled at the next upload once its copy finished (one batch at a time,
    the third batch finds its buffer still out and a second one is made), and the normalized
    batch equals the one without a pool."""
    model = rtmdet.create("rtmdet-tiny", num_classes=3).eval()
    opts = SpeedOptions(preprocess="device" if device_pre else "cpu")
    plain, backend = TorchBackend(model, opts), TorchBackend(model, opts)
    pool, events, made = fake_pool()
    monkeypatch.setattr(backend, "_pinned_pool", lambda: pool)
    rng = np.random.default_rng(3)
    used = []
    for step in range(6):
        imgs = [rng.integers(0, 256, (40 + 8 * (i % 2), 50, 3), dtype=np.uint8) for i in range(3)]
        host = backend.preprocess_host(imgs, (64, 64))
        used.append(host[-1] is not None)
        if host[-1] is not None:  # written where the upload reads
            written = host[0][0][0][1] if device_pre else host[0]
            assert np.shares_memory(written, host[-1].numpy())
        x, metas = backend.preprocess_device(host)
        y, ref_metas = plain.preprocess(imgs, (64, 64))
        assert torch.equal(x, y) and metas == ref_metas
        for ev in events:
            ev.done = True
    assert used == [False, True, False, True, True, True] and len(made) == 2
    assert len(events) == 4  # one per batch written into a buffer


@cuda
@pytest.mark.parametrize("device_pre", [False, True])
def test_cuda_preprocess_from_pinned_buffers_is_unchanged(device_pre):
    """From the second batch on (the first one's miss allocated a pinned buffer) batches are
    mostly written into pinned buffers and uploaded asynchronously; the normalized batch equals
    the plain path's, batch after batch, while the buffers are recycled."""
    model = rtmdet.create("rtmdet-tiny", num_classes=3).cuda().eval()
    backend = TorchBackend(model, SpeedOptions(preprocess="device" if device_pre else "cpu"))
    rng = np.random.default_rng(2)
    pinned = []
    for step in range(8):
        imgs = [rng.integers(0, 256, (300 + 40 * (step % 2), 400, 3), dtype=np.uint8) for _ in range(4)]
        host = backend.preprocess_host(imgs, (320, 320))
        buf = host[-1]
        pinned.append(buf is not None and buf.is_pinned())
        x, metas = backend.preprocess_device(host)
        if device_pre:
            from rtmdet.data.letterbox import letterbox_batch_torch
            ref = model.normalize(letterbox_batch_torch(imgs, (320, 320), "cuda")[0])
        else:
            ref = model.normalize(torch.from_numpy(letterbox_batch(imgs, (320, 320))[0]).cuda())
        imgs[0][:] = 0  # the caller may reuse its arrays once preprocess returned
        assert torch.equal(x, ref)
    assert not pinned[0] and sum(pinned) >= 5, pinned
    assert 1 <= backend._pinned_pool().allocated <= 4


def test_a_failed_batch_puts_its_buffer_back(monkeypatch):
    """An image that cannot be letterboxed fails its batch with the usual error; the buffer it
    had taken is free again for the next batch."""
    model = rtmdet.create("rtmdet-tiny", num_classes=3).eval()
    backend = TorchBackend(model)
    pool, _, made = fake_pool(max_buffers=1)
    monkeypatch.setattr(backend, "_pinned_pool", lambda: pool)
    good = [np.full((40, 50, 3), 9, np.uint8)]
    backend.preprocess_device(backend.preprocess_host(good, (64, 64)))  # the miss allocates
    for bad in (np.zeros((40, 50, 5), np.uint8), np.zeros((50, 40, 5), np.uint8)):  # 5 channels
        with pytest.raises(ValueError, match="HxWx3"):
            backend.preprocess_host([bad], (64, 64))
    host = backend.preprocess_host(good, (64, 64))
    assert host[-1] is not None and made == [3 * 64 * 64]


@cuda
@pytest.mark.parametrize("device_pre", [False, True])
def test_cuda_reading_ahead_through_pinned_buffers_keeps_every_detection(device_pre):
    """Batches letterboxed on the worker thread into pinned buffers, uploaded asynchronously
    while earlier buffers are recycled: the same detections as one batch at a time."""
    from rtmdet.deploy.bench import spread_head
    from rtmdet.inference.loop import run_batch, run_inference
    torch.manual_seed(0)
    model = spread_head(rtmdet.create("rtmdet-tiny").cuda().eval())
    opts = SpeedOptions(preprocess="device" if device_pre else "cpu")
    backend, plain = TorchBackend(model, opts), TorchBackend(model, opts)
    plain._pinned_pool = lambda: None  # uploads from plain arrays
    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, (480 - 40 * (i % 3), 640, 3), dtype=np.uint8) for i in range(10)]
    got = run_inference(backend, imgs, batch_size=3, prefetch=True)
    want = [d for s in range(0, 10, 3) for d in run_batch(plain, imgs[s:s + 3], model.test_cfg)]
    assert backend._pinned_pool().allocated >= 1
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) and torch.equal(torch.as_tensor(g.boxes), torch.as_tensor(w.boxes))
        assert torch.equal(torch.as_tensor(g.scores), torch.as_tensor(w.scores))
