"""`rtmdet train`: the training sub-command."""
from __future__ import annotations

import argparse
import dataclasses


def cmd_train(args) -> int:
    from ..cli import UsageError, _device
    from ..config import apply_overrides
    from .config import TrainConfig
    from .trainer import NonFiniteLossError, Trainer

    given = {k: getattr(args, k) for k in ("data", "model", "weights", "epochs", "batch", "imgsz",
                                           "workers", "device", "project", "name", "resume")
             if getattr(args, k, None) is not None}
    cfg = dataclasses.replace(TrainConfig(), **given)
    try:
        cfg = apply_overrides(cfg, args.overrides or [])
    except (KeyError, ValueError) as e:
        raise UsageError(str(e)) from None
    if cfg.device:
        _device(cfg.device)  # a one-line error for an unknown or absent device
    if not cfg.data and not cfg.resume:
        raise UsageError("give --data PATH (or --resume)")
    try:  # what is wrong before training starts (data, model name, weights) is the user's to fix
        trainer = Trainer(cfg)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UsageError(str(e.args[0]) if isinstance(e, KeyError) else str(e)) from None
    try:
        trainer.train()
    except NonFiniteLossError as e:
        print(f"rtmdet train: {e}")
        return 1
    return 0


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a detector (the full RTMDet recipe)",
                       description="Train RTMDet. Extra settings as key=value (see TrainConfig), "
                                   "e.g. lr=0.001 grad_accum=2 amp=false")
    p.add_argument("--data", help="dataset: COCO json/folder or YOLO yaml/folder")
    p.add_argument("--model", help="preset, e.g. rtmdet-tiny (default)")
    p.add_argument("--weights", help="fine-tune from a checkpoint or zoo name")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int, help="images per process")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1")
    p.add_argument("--project", help="default runs/train")
    p.add_argument("--name", help="default exp")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from PATH/last.pth (no value: <project>/<name>/last.pth)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_train)
