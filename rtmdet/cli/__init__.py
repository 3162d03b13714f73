"""The `rtmdet` command: one module per sub-command, shared helpers in `common`."""
from __future__ import annotations

import argparse
import logging
import sys

from . import bench, demo, export, models, predict, split, train, val
from .common import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtmdet", description="RTMDet detectors in plain PyTorch")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    for verb in (predict, val, models, train, export, bench, demo, split):
        verb.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"rtmdet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
