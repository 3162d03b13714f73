"""Page-locked host buffers that letterboxed batches are written into before they go to the GPU.

A batch of 32 letterboxed 640x640 images is 39 MB. Written into a fresh numpy array each time,
it costs page faults on every batch, and the upload from pageable memory goes through the
driver's staging buffers while the host waits. Written into a reused pinned buffer, the pages are
resident and the upload is one asynchronous DMA copy that overlaps the work queued before it.

Threads: `take` may run on the reading-ahead worker and never calls CUDA; allocating, recording
events and recycling (`uploaded`, `refill`) run on the thread that drives the GPU (a CUDA call
from another thread while that one captures a CUDA graph would break the capture)."""
from __future__ import annotations

import threading

import numpy as np
import torch


class PinnedPool:
    """A few reusable pinned uint8 buffers. `take(nbytes)` hands out a free buffer of at least
    that size, or None (the caller writes into a plain array: same result, slower upload) and
    remembers the size, which `refill` allocates on the driving thread. A buffer returns to the
    pool once the copy out of it has finished on the device (an event recorded after it)."""

    def __init__(self, device, max_buffers: int = 4, alloc=None, event=None):
        self.device = torch.device(device)
        self.max_buffers = max_buffers
        # injectable for the CPU tests (they fake pinning and events)
        self._alloc = alloc or (lambda n: torch.empty(n, dtype=torch.uint8, pin_memory=True))
        self._event = event or self._cuda_event
        self._lock = threading.Lock()
        self._free: list[torch.Tensor] = []
        self._busy: list[tuple[object, torch.Tensor]] = []
        self._wanted = 0
        self.allocated = 0  # buffers made (handed out or not)

    def _cuda_event(self):
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def take(self, nbytes: int) -> torch.Tensor | None:
        """A free buffer of >= nbytes (the smallest that fits), or None. Any thread."""
        with self._lock:
            i = _smallest(self._free, lambda n: n >= nbytes)
            if i is not None:
                return self._free.pop(i)
            self._wanted = max(self._wanted, nbytes)
            return None

    def put_back(self, buf: torch.Tensor | None) -> None:
        """`buf` was taken but nothing was copied out of it (the batch failed): free again.
        Any thread."""
        if buf is not None:
            with self._lock:
                self._free.append(buf)

    def uploaded(self, buf: torch.Tensor | None) -> None:
        """The copies out of `buf` are queued on the current stream: it is free once they ran.
        Driving thread."""
        if buf is not None:
            ev = self._event()
            with self._lock:
                self._busy.append((ev, buf))
        self.refill()

    def refill(self) -> None:
        """Recycle buffers whose copies finished; allocate the size a `take` missed (replacing
        the smallest free buffer when the pool is full). Driving thread."""
        with self._lock:
            busy, self._busy = self._busy, []
            for ev, buf in busy:
                if ev.query():
                    self._free.append(buf)
                else:
                    self._busy.append((ev, buf))
            wanted, self._wanted = self._wanted, 0
        if not wanted:
            return
        if self.allocated >= self.max_buffers:
            with self._lock:
                i = _smallest(self._free, lambda n: n < wanted)
                if i is None:
                    return  # every buffer is in use: the next batch writes a plain array
                del self._free[i]
                self.allocated -= 1
        buf = self._alloc(wanted)
        with self._lock:
            self._free.append(buf)
            self.allocated += 1


def _smallest(bufs: list[torch.Tensor], ok) -> int | None:
    """Position of the smallest buffer whose size satisfies `ok` (by position: `list.remove`
    would compare tensors element by element)."""
    sizes = [(b.numel(), i) for i, b in enumerate(bufs) if ok(b.numel())]
    return min(sizes)[1] if sizes else None


def batch_view(buf: torch.Tensor | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The first prod(shape) bytes of `buf` as a uint8 array of `shape` (None for no buffer)."""
    if buf is None:
        return None
    n = int(np.prod(shape))
    return buf[:n].numpy().reshape(shape)
