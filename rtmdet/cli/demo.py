"""`rtmdet demo`: the offline end-to-end loop (synthetic dataset -> train -> val -> draw)."""
from __future__ import annotations

import argparse

from .common import device, non_negative_int, positive_int


def cmd_demo(args) -> int:
    from ..demo import run_demo
    dev = device(args.device)  # a one-line error for an unknown or absent device, before any work
    run_demo(args.out, args.epochs, args.images, dev, args.seed, task=args.task)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="offline end-to-end demo: synthetic dataset -> train -> val -> draw",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=("detect", "rotated"), default="detect",
                   help="detect: shapes (COCO) and RTMDet-tiny, COCO AP; rotated: rotated shapes "
                        "(DOTA txt) and RTMDet-R tiny, DOTA mAP50, rotated boxes drawn")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=positive_int, default=60)
    p.add_argument("--images", type=positive_int, default=48, help="training images to generate")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=cmd_demo)
