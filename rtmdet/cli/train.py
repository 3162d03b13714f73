"""`rtmdet train`: the full RTMDet recipe on a COCO or YOLO dataset."""
from __future__ import annotations

import dataclasses
import sys

from .common import UsageError, device, image_size, non_negative_int, positive_int


def cmd_train(args) -> int:
    from ..atomic import check_creatable
    from ..config import apply_overrides
    from ..train.config import TrainConfig, validate
    from ..train.interrupt import TrainingInterrupted
    from ..train.trainer import NonFiniteLossError, NothingToResume, OutOfMemory, Trainer
    from ..zoo import DownloadError

    given = {k: getattr(args, k) for k in ("data", "model", "weights", "epochs", "batch", "imgsz",
                                           "workers", "device", "project", "name", "resume")
             if getattr(args, k, None) is not None}
    cfg = dataclasses.replace(TrainConfig(), **given)
    try:
        cfg = validate(apply_overrides(cfg, args.overrides or []))
    except (KeyError, ValueError, TypeError) as e:
        raise UsageError(str(e.args[0]) if isinstance(e, KeyError) else str(e)) from None
    explicit = set(given) | {o.split("=", 1)[0].strip() for o in args.overrides or []}
    if cfg.device:
        device(cfg.device)  # a one-line error for an unknown or absent device
    if not cfg.data and not cfg.resume:
        raise UsageError("give --data PATH (or --resume)")
    if not cfg.resume:  # an unwritable --project is found before any work
        check_creatable(cfg.project)
    try:  # what is wrong before training starts (data, model name, weights) is the user's to fix
        trainer = Trainer(cfg, explicit=explicit)
    except (FileNotFoundError, ValueError, KeyError, DownloadError) as e:
        raise UsageError(str(e.args[0]) if isinstance(e, KeyError) else str(e)) from None
    try:
        trainer.train()
    except (NonFiniteLossError, OutOfMemory) as e:
        print(f"rtmdet train: {e}", file=sys.stderr)
        return 1
    except NothingToResume as e:
        raise UsageError(str(e)) from None
    except TrainingInterrupted as e:
        print(f"rtmdet train: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a detector (the full RTMDet recipe)",
                       description="Train RTMDet. Extra settings as key=value (see TrainConfig), "
                                   "e.g. lr=0.001 grad_accum=2 amp=false amp_dtype=bfloat16 "
                                   "channels_last=false compile=true speed_probe=false")
    p.add_argument("--data", help="dataset: COCO json/folder or YOLO yaml/folder")
    p.add_argument("--model", help="preset, e.g. rtmdet-tiny (default)")
    p.add_argument("--weights", help="fine-tune from a checkpoint or zoo name")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch", type=positive_int, help="images per process")
    p.add_argument("--imgsz", type=image_size)
    p.add_argument("--workers", type=non_negative_int)
    p.add_argument("--device", help="cpu, cuda, cuda:1")
    p.add_argument("--project", help="default runs/train")
    p.add_argument("--name", help="default exp")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from PATH/last.pth (no value: <project>/<name>/last.pth)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_train)
