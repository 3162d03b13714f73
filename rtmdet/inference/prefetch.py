"""Overlap the work around the network with the network: the next batch is read and letterboxed
on a worker thread while the current one runs, and `rtmdet predict` draws and writes results on
another (OpenCV, file I/O and torch release the GIL).

The threads never touch the GPU: the worker runs `Backend.preprocess_host` (decoding and the
numpy letterbox, or with the letterbox on the GPU the stacking of same-shape images, into pinned
buffers the driving thread allocated: `rtmdet.inference.pinned`), the writer gets host copies of
the detections. A CUDA call from another thread
while the main one captures a CUDA graph (`cuda_graph=True`, first batch of each shape) would
break the capture."""
from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def on_accelerator(model) -> bool:
    """Whether a `Detector` / model runs its network on a GPU (then the host threads are free
    for reading ahead and writing behind; on a CPU they would take the network's cores)."""
    backend = getattr(model, "backend", None)
    if backend is not None:
        return bool(backend.accelerated)
    device = getattr(model, "device", None)
    return device is not None and getattr(device, "type", str(device)) != "cpu"


def ordered_map(fn: Callable[[T], R], items: Iterable[T], ahead: int = 1,
                workers: int = 1) -> Iterator[R]:
    """fn(item) for each item, in order, computed up to `ahead` items in advance on `workers`
    threads (ahead=0: in the caller's thread). An exception is raised where its item's result
    is taken, as in a plain loop; closing the iterator early drops the pending work."""
    if ahead <= 0:
        for item in items:
            yield fn(item)
        return
    pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="rtmdet-prefetch")
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class BackgroundWriter:
    """Runs jobs (drawing, encoding, writing files) on one thread, at most `depth` queued, in
    submission order; `close()` waits for all of them and raises the first error."""

    def __init__(self, depth: int = 16, enabled: bool = True):
        self.pool = cf.ThreadPoolExecutor(1, thread_name_prefix="rtmdet-writer") if enabled else None
        self.depth = depth
        self.pending: deque = deque()
        self.failed = False

    def submit(self, fn: Callable, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        # a failed job raises here at the next submit; the jobs queued after it do not run
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.depth):
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._run, fn, *args))

    def _run(self, fn: Callable, *args) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except BaseException:
            self.failed = True
            raise

    def close(self) -> None:
        if self.pool is None:
            return
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        elif self.pool is not None:  # an error already on its way: stop, keep it
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
