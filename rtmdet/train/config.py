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
    warmup_iters: int = 1000          # linear warm-up steps (the reference), at most; a short run
    warmup_ratio: float = 0.1         # warms up over this share of its optimizer steps instead
    warmup_min_iters: int = 10        # (but at least this many, and at most half the run):
    # warm-up = min(warmup_iters, max(warmup_min_iters, warmup_ratio * steps), steps // 2)
    warmup_start: float = 1e-5
    min_lr_ratio: float = 0.05
    stage2_epochs: int = 20           # last epochs without mosaic/mixup
    pipeline: str = "recipe"          # recipe: stage 1 (mosaic/mixup) then stage 2; stage2: the
                                      # stage-2 pipeline throughout; light: resize+flip+pad only
                                      # (tiny sets, smoke tests); validation by val_interval
    val_interval: int = 10            # every epoch during stage 2, as the reference
    patience: int = 0                 # early stop: end the run at a validation that finds no
    # better model in the `patience` epochs since the best one (0: never, as the reference).
    # Counted in epochs; a stop in stage 1 skips the stage-2 epochs the recipe ends with
    freeze: int = 0                   # fine-tuning: the first N of the backbone's stem, stage1..
    # stage4 keep their weights and BatchNorm statistics (5: the whole backbone; the reference's
    # frozen_stages=N-1); 0: everything trains, as the recipe
    ema_momentum: float = 0.0002
    ema_gamma: float = 2000
    seed: int = 0
    deterministic: bool = False
    amp: bool = True                  # mixed precision on CUDA (on the CPU only with bfloat16)
    amp_dtype: str = "float16"        # float16 (with loss scaling) or bfloat16 (no GradScaler);
                                      # bfloat16 also turns autocast on for a CPU run
    channels_last: bool = True        # NHWC model and input on CUDA (faster convs under AMP)
    compile: bool = False             # torch.compile the training network (checkpoints keep the
                                      # plain model's keys); the first steps compile (minutes)
    speed_probe: bool = True          # at the start: images/s of the loader alone and of the
                                      # step alone, and which one limits training (a few batches;
                                      # the run's weights and random streams are untouched)
    cache: bool = False               # decode every training image once into RAM before the
    # first epoch (the same pixels: results unchanged; forked loader workers share it); skipped
    # with a warning when the images would need more than 70% of the available memory
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


# what each numeric knob may be (checked with its type by `validate`)
RULES = {
    "epochs": (lambda v: v >= 1, ">= 1"), "batch": (lambda v: v >= 1, ">= 1"),
    "imgsz": (lambda v: v >= 32 and v % 32 == 0, "a positive multiple of 32"),
    "workers": (lambda v: v >= 0, ">= 0"), "lr": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"), "warmup_iters": (lambda v: v >= 0, ">= 0"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "warmup_min_iters": (lambda v: v >= 0, ">= 0"),
    "warmup_start": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "stage2_epochs": (lambda v: v >= 0, ">= 0"), "val_interval": (lambda v: v >= 1, ">= 1"),
    "patience": (lambda v: v >= 0, ">= 0"), "freeze": (lambda v: 0 <= v <= 5, "between 0 and 5"),
    "ema_momentum": (lambda v: 0 < v < 1, "in (0, 1)"), "ema_gamma": (lambda v: v > 0, "> 0"),
    "seed": (lambda v: v >= 0, ">= 0"), "grad_accum": (lambda v: v >= 1, ">= 1"),
    "save_period": (lambda v: v >= 0, ">= 0"), "val_batch": (lambda v: v >= 1, ">= 1"),
    "val_score_thr": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "amp_dtype": (lambda v: v in ("float16", "bfloat16"), "float16 or bfloat16"),
}


def validate(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with every field checked against its type and range (an int is accepted for a
    float field); a ValueError naming the field otherwise, e.g. `lr='abc': must be a number`."""
    import dataclasses
    import math
    import typing
    hints = typing.get_type_hints(TrainConfig)
    fixed = {}
    for f in dataclasses.fields(cfg):
        v, hint = getattr(cfg, f.name), hints[f.name]
        kinds = typing.get_args(hint) or (hint,)
        if v is None and type(None) in kinds:
            continue
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            v = fixed[f.name] = float(v)
        if isinstance(v, bool) and bool not in kinds:
            ok = False
        else:
            ok = any(isinstance(v, k) for k in kinds if k is not type(None))
        if not ok:
            want = {int: "a whole number", float: "a number", bool: "true or false",
                    str: "a string"}
            text = " or ".join(want.get(k, k.__name__) for k in kinds if k is not type(None))
            raise ValueError(f"{f.name}={v!r}: must be {text}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{f.name}={v!r}: must be a finite number")
        if f.name in RULES and not RULES[f.name][0](v):
            raise ValueError(f"{f.name}={v!r}: must be {RULES[f.name][1]}")
    return dataclasses.replace(cfg, **fixed) if fixed else cfg
