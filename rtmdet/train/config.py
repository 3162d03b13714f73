"""`TrainConfig`: every knob of a training run (saved as YAML next to the checkpoints)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    data: str = ""                    # dataset path (COCO json/folder or YOLO yaml/folder; rotated
                                      # models: a DOTA folder or YOLO-OBB yaml/folder)
    model: str = "rtmdet-tiny"        # preset name (rtmdet-tiny ... rtmdet-x)
    weights: str | None = None        # fine-tune from this checkpoint (or zoo name)
    pretrained_backbone: str | bool | None = None  # ImageNet backbone to start from. None/true:
    # the recipe's (tiny and s: cspnext-{tiny,s}_imagenet_600e.pth, downloaded once; m/l/x: none),
    # skipped with `weights` or on resume; false: from scratch; a PATH, URL or name: that file
    epochs: int = 300
    batch: int = 32                   # per process
    imgsz: int = 640
    workers: int = 4
    device: str | None = None         # cpu, cuda, cuda:1; default cuda when available
    lr: float | None = None           # None: the recipe's lr scaled to the total batch (RTMDet
                                      # 0.004 x total_batch / 256, RTMDet-R 0.00025 x total_batch / 8)
    weight_decay: float = 0.05
    warmup_iters: int = 1000
    warmup_start: float = 1e-5
    min_lr_ratio: float = 0.05
    stage2_epochs: int = 20           # last epochs without mosaic/mixup
    pipeline: str = "recipe"          # recipe: stage 1 (mosaic/mixup) then stage 2; stage2: the
                                      # stage-2 pipeline throughout; light: resize+flip+pad only
                                      # (tiny sets, smoke tests); validation by val_interval
    val_interval: int = 10            # every epoch during stage 2, as the reference
    ema_momentum: float = 0.0002
    ema_gamma: float = 2000
    seed: int = 0
    deterministic: bool = False
    amp: bool = True                  # only on CUDA
    grad_accum: int = 1
    save_period: int = 0              # also write last.pth every N optimizer steps inside an
    # epoch (0: at epoch ends only); resuming from such a checkpoint replays the epoch's data up
    # to that batch without computing, so the run continues exactly where it stopped
    sync_bn: bool = False
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: str | None = None         # path to last.pth, or "auto" for <project>/<name>/last.pth
    train_split: str = "train"
    val_split: str = "val"
    val_batch: int = 8
    val_score_thr: float = 0.001
    plots: bool = True
