"""One shared pool of host threads for the per-image work around the network: decoding a
batch's image files (`rtmdet predict`, `predict` on paths, `rtmdet val`).

OpenCV decodes without the GIL, so a batch's files are decoded side by side on the machine's
cores: on a GPU the network does not need them, on a CPU it is not running while the batch is
read. (Letterboxing stays on one thread: into fresh memory, two threads were up to 11x slower on
the 2-core CPU - concurrent first-touch page faults - and into a reused buffer they gained
nothing at 640x480.) The pool threads never call CUDA (a CUDA call off the driving thread
would break the capture of a CUDA graph). `RTMDET_HOST_THREADS` sets how many threads (default:
the usable cores, at most 8; 1 = everything on the calling thread)."""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

ENV = "RTMDET_HOST_THREADS"
DEFAULT_MAX = 8

_lock = threading.Lock()
_pool: cf.ThreadPoolExecutor | None = None
_pool_threads = 0  # how many threads the pool was made with
_local = threading.local()


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) has none of the parent's threads: it starts its own
    pool if it needs one; the lock may have been held by a thread that is gone."""
    global _lock, _pool, _pool_threads
    _lock, _pool, _pool_threads = threading.Lock(), None, 0


if hasattr(os, "register_at_fork"):  # every platform that can fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def host_threads() -> int:
    """How many host threads the per-image work may use."""
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{ENV}={value!r}: must be a whole number >= 1")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(DEFAULT_MAX, cores))


def _init_worker() -> None:
    _local.in_pool = True


def _get_pool(threads: int) -> cf.ThreadPoolExecutor:
    global _pool, _pool_threads
    with _lock:
        if _pool_threads != threads:
            old, _pool = _pool, cf.ThreadPoolExecutor(threads, thread_name_prefix="rtmdet-host",
                                                      initializer=_init_worker)
            _pool_threads = threads
            if old is not None:  # the thread count changed: the old threads end when idle
                old.shutdown(wait=False)
        return _pool


def host_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[fn(x) for x in items] on the host threads, in order. Every call has finished before
    this returns or raises (a task may be writing into a buffer the caller reuses); the error of
    the first item that failed, in order, is raised, as a plain loop would. Called from a pool
    thread, or with one thread, it is that plain loop."""
    items = list(items)
    threads = host_threads()
    if min(threads, len(items)) <= 1 or getattr(_local, "in_pool", False):
        return [fn(x) for x in items]
    pool = _get_pool(threads)
    futures = [pool.submit(fn, x) for x in items]
    try:
        cf.wait(futures)
    except BaseException:  # Ctrl-C: drop what has not started, let the rest finish, then stop
        for f in futures:
            f.cancel()
        cf.wait(futures)
        raise
    return [f.result() for f in futures]
