"""SIGTERM (`kill`, `docker stop`, a cluster scheduler's preemption) handled like Ctrl-C.

By default SIGTERM ends Python at once: a video being drawn stays a temporary file, a training
epoch is lost. Within `sigterm_as_interrupt()` it raises `Terminated`, a KeyboardInterrupt, so
every place that keeps its work on Ctrl-C keeps it on SIGTERM too; the process then exits 143
(128 + 15, as the shell reports a SIGTERM) instead of Ctrl-C's 130."""
from __future__ import annotations

import contextlib
import signal
import threading

CTRL_C_EXIT, SIGTERM_EXIT = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (raised where Ctrl-C raises KeyboardInterrupt)."""


def raise_terminated(signum, frame):
    raise Terminated("terminated (SIGTERM)")


def exit_code(e: BaseException | None = None) -> int:
    """The shell's code for a run ended by `e`: 143 for SIGTERM, 130 for Ctrl-C (an exception
    that carries its own `exit_code`, as a stopped training does, gives that)."""
    own = getattr(e, "exit_code", None)
    if isinstance(own, int):
        return own
    return SIGTERM_EXIT if isinstance(e, Terminated) else CTRL_C_EXIT


def sigterm_ends_the_process() -> bool:
    """Whether SIGTERM would end this process (the default, or our own handler): only then may
    a part of the program take it over. A host application's own handler is left alone."""
    return signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, raise_terminated)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within: SIGTERM raises `Terminated`. Only in the main thread and where SIGTERM had its
    default action; the previous handler is restored on the way out."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
