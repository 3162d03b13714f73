"""Ctrl-C or SIGTERM during training stops at the next safe point and saves, instead of losing
the epoch.

The first SIGINT (Ctrl-C) or SIGTERM (`kill`, `docker stop`, a scheduler preempting the job)
only raises a flag; the trainer checks it between batches (and after the epoch's validation)
and writes `last.pth` at the last optimizer step, which `--resume` continues from exactly, as it
does from `save_period` checkpoints. A second signal interrupts at once, as Ctrl-C always did.
Under torchrun every rank gets the signal (twice after a terminal's Ctrl-C: the launcher forwards
its own copy), so there repeats are ignored and the ranks agree at each step on when to stop;
torchrun's SIGKILL 30 s after its own signal remains the hard stop."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

from ..signals import CTRL_C_EXIT, SIGTERM_EXIT, sigterm_ends_the_process

log = logging.getLogger("rtmdet.train")

NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; `checkpoint` holds the state after the last optimizer
    step; `exit_code` is the shell's code for that signal (130, 143)."""

    def __init__(self, message: str, checkpoint, exit_code: int = CTRL_C_EXIT):
        super().__init__(message)
        self.checkpoint, self.exit_code = checkpoint, exit_code


class StopFlag:
    """Whether a stop was asked for, and by what (`reason`: "Ctrl-C" or "SIGTERM")."""

    def __init__(self):
        self.reason = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason

    @property
    def exit_code(self) -> int:
        return SIGTERM_EXIT if self.reason == "SIGTERM" else CTRL_C_EXIT


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True, repeats_interrupt: bool = True):
    """Within: the first SIGINT or SIGTERM sets the yielded `StopFlag`; a second one raises
    KeyboardInterrupt (unless `repeats_interrupt` is False: DDP). Only in the main thread, and
    only for a signal that ended the run before (Ctrl-C raising KeyboardInterrupt, SIGTERM
    with its default action or the CLI's); a process that ignores or handles a signal keeps
    doing so, and there the flag never rises for it."""
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    taken = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        taken[signal.SIGINT] = signal.default_int_handler
    if sigterm_ends_the_process():
        taken[signal.SIGTERM] = signal.getsignal(signal.SIGTERM)
    owner = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != owner:  # a data loader worker forked meanwhile: the trainer decides
            return
        if flag:
            if repeats_interrupt:
                raise KeyboardInterrupt
            return
        flag.set(NAMES[signum])
        log.warning("%s: saving at the last finished step, then stopping%s", flag.reason,
                    " (Ctrl-C again to stop at once, losing the epoch)" if repeats_interrupt else "")

    for s in taken:
        signal.signal(s, on_signal)
    try:
        yield flag
    finally:
        for s, previous in taken.items():
            signal.signal(s, previous)
