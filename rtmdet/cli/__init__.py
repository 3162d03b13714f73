"""The `rtmdet` command: one module per sub-command, shared helpers in `common`."""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from .. import __version__
from ..atomic import WriteError
from ..host_memory import keep_freed_memory
from ..signals import exit_code, sigterm_as_interrupt
from . import bench, demo, env, export, models, predict, split, train, val
from .common import UsageError


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (`rtmdet val: error: argument --batch: 0: must be
    >= 1`), exit code 2; `-h` still prints the full usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rtmdet", description="RTMDet detectors in plain PyTorch")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-V", "--version", action="version", version=f"rtmdet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    for verb in (predict, val, models, train, export, bench, demo, split, env):
        verb.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad flag (one line printed, 2) or -h (0): returned like the rest
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s")
    keep_freed_memory()  # this process's batches reuse mapped pages (`rtmdet.host_memory`)
    try:  # SIGTERM (kill, docker stop) keeps what Ctrl-C keeps: the work done so far
        with sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except (UsageError, WriteError) as e:  # a bad argument, or an output that cannot be written
        print(f"rtmdet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        return exit_code(e)
    except torch.cuda.OutOfMemoryError:  # predict, val, bench, export: one line, not a traceback
        batch = getattr(args, "batch", None)
        print(f"rtmdet {args.command}: error: out of GPU memory"
              + (f" at --batch {batch}: lower --batch" if batch and batch > 1 else ": lower --imgsz")
              + (" (or use --half)" if hasattr(args, "half") and not args.half else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
