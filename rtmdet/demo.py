"""`rtmdet demo`: the whole loop offline in a few CPU minutes. Generate a synthetic dataset, train
a tiny model on it, score it on the held-out split, and draw its detections.

- ``task="detect"``: coloured shapes (COCO json) -> RTMDet-tiny -> COCO metrics;
- ``task="rotated"``: rotated rectangles, ellipses and bars (DOTA txt) -> RTMDet-R tiny through
  the RTMDet-R pipeline (flips in three directions, free rotations) -> DOTA mAP50 -> rotated boxes.
"""
from __future__ import annotations

from pathlib import Path

TASKS = ("detect", "rotated")


def _rotated_table(metrics: dict, class_names) -> str:
    """DOTA mAP50 and the per-class AP50 of `evaluate_rotated`'s result."""
    lines = [f"DOTA mAP50 {metrics['AP50']:.3f}", "", f"{'class':<10s}  {'num_gt':>6s}  {'AP50':>6s}"]
    for name, row in zip(class_names, metrics["per_class"]):
        lines.append(f"{name:<10s}  {row['num_gts']:>6d}  {float(row['ap'][0]):6.3f}")
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", epochs: int = 60, images: int = 48,
             device: str | None = None, seed: int = 0, task: str = "detect") -> dict:
    """Returns the held-out metrics (COCO bbox, or DOTA for `task="rotated"`); writes data/,
    train/ (checkpoints, logs, curves) and predict/ (drawn detections) under `out`."""
    import cv2

    from .api import load
    from .data.datasets import load_dataset
    from .eval.coco import format_table
    from .eval.validate import evaluate_model
    from .train.config import TrainConfig
    from .train.trainer import Trainer

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    out = Path(out)
    data = out / "data"
    if task == "detect":
        from .data.synthetic import make_shapes_splits
        make_shapes_splits(data, {"train": images, "val": 16}, seed=seed, image_size=(192, 192),
                           scale_range=(0.15, 0.5))
        model_name, kind, extra = "rtmdet-tiny", "boxes", dict(pipeline="light")
    else:
        from .data.synthetic_rotated import make_rotated_shapes_splits
        make_rotated_shapes_splits(data, {"train": images, "val": 16}, seed=seed, image_size=(192, 192))
        # the RTMDet-R pipeline itself (one stage: validation by val_interval only)
        model_name, kind, extra = "rtmdet-r-tiny", "rotated", {}
    # settings that learn fast on a CPU (see tests/test_train_smoke.py, test_rotated_train.py):
    # small images, lr 0.004 at batch 8 with a short warm-up; from scratch, so it stays offline
    cfg = TrainConfig(data=str(data), model=model_name, epochs=epochs, batch=8, imgsz=192,
                      workers=0, device=device, lr=0.004, warmup_iters=20,
                      val_interval=max(1, epochs // 4), seed=seed, project=str(out), name="train",
                      exist_ok=True, pretrained_backbone=False, **extra)
    trainer = Trainer(cfg)
    trainer.train()
    model = load(trainer.save_dir / "best.pth", device=trainer.device)
    val = load_dataset(data, split="val", kind=kind)
    metrics, _ = evaluate_model(model, val, batch_size=8, progress=False, imgsz=192)
    metrics = metrics["bbox"] if task == "detect" else metrics["rbox"]
    pred_dir = out / "predict"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for rec in val.records[:8]:
        img = cv2.imread(val.image_path(rec))
        dets = model.predict(img, score_thr=0.3, imgsz=192)
        cv2.imwrite(str(pred_dir / Path(rec.path).name), dets.draw(img))
    print(format_table(metrics, per_class=True) if task == "detect" else _rotated_table(metrics, val.class_names))
    print(f"checkpoints and curves: {trainer.save_dir}\ndrawn detections: {pred_dir}")
    return metrics
