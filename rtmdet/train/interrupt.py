"""Ctrl-C during training stops at the next safe point and saves, instead of losing the epoch.

The first SIGINT only raises a flag; the trainer checks it between batches (and after the
epoch's validation) and writes `last.pth` at the last optimizer step, which `--resume`
continues from exactly, as it does from `save_period` checkpoints. A second SIGINT interrupts
at once, as Ctrl-C always did."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

log = logging.getLogger("rtmdet.train")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; `checkpoint` holds the state after the last optimizer step."""

    def __init__(self, message: str, checkpoint):
        super().__init__(message)
        self.checkpoint = checkpoint


class StopFlag:
    """Whether a stop was asked for (the first Ctrl-C)."""

    def __init__(self):
        self.raised = False

    def __bool__(self) -> bool:
        return self.raised


@contextlib.contextmanager
def stop_on_sigint(enabled: bool = True):
    """Within: the first SIGINT sets the yielded `StopFlag`, a second raises KeyboardInterrupt.
    Only in the main thread and where Ctrl-C raised KeyboardInterrupt before (a process that
    ignores SIGINT keeps ignoring it); elsewhere the flag never rises."""
    flag = StopFlag()
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if not enabled or previous is not signal.default_int_handler:
        yield flag
        return

    owner = os.getpid()

    def on_sigint(signum, frame):
        if os.getpid() != owner:  # a data loader worker forked meanwhile: the trainer decides
            return
        if flag.raised:
            raise KeyboardInterrupt
        flag.raised = True
        log.warning("Ctrl-C: saving at the last finished step, then stopping (Ctrl-C again to stop "
                    "at once, losing the epoch)")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
