"""`rtmdet demo`: the whole loop offline in a few CPU minutes. Generate a shapes dataset, train
RTMDet-tiny on it, score it with COCO metrics, and draw its detections on the held-out images."""
from __future__ import annotations

from pathlib import Path


def run_demo(out: str | Path = "runs/demo", epochs: int = 60, images: int = 48,
             device: str | None = None, seed: int = 0) -> dict:
    """Returns the held-out COCO metrics; writes data/, train/ (checkpoints, logs, curves) and
    predict/ (drawn detections) under `out`."""
    import cv2

    from .api import load
    from .data.datasets import load_dataset
    from .data.synthetic import make_shapes_splits
    from .eval.coco import format_table
    from .eval.validate import evaluate_model
    from .train.config import TrainConfig
    from .train.trainer import Trainer

    out = Path(out)
    data = out / "data"
    make_shapes_splits(data, {"train": images, "val": 16}, seed=seed, image_size=(192, 192),
                       scale_range=(0.15, 0.5))
    # settings that learn fast on a CPU (see tests/test_train_smoke.py): small images, a light
    # pipeline, lr 0.004 at batch 8 with a short warm-up; from scratch, so it stays offline
    cfg = TrainConfig(data=str(data), model="rtmdet-tiny", epochs=epochs, batch=8, imgsz=192,
                      workers=0, device=device, lr=0.004, warmup_iters=20, pipeline="light",
                      val_interval=max(1, epochs // 4), seed=seed, project=str(out), name="train",
                      exist_ok=True, pretrained_backbone=False)
    trainer = Trainer(cfg)
    trainer.train()
    model = load(trainer.save_dir / "best.pth", device=trainer.device)
    val = load_dataset(data, split="val")
    metrics, _ = evaluate_model(model, val, batch_size=8, progress=False, imgsz=192)
    metrics = metrics["bbox"]
    pred_dir = out / "predict"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for rec in val.records[:8]:
        img = cv2.imread(val.image_path(rec))
        dets = model.predict(img, score_thr=0.3, imgsz=192)
        cv2.imwrite(str(pred_dir / Path(rec.path).name), dets.draw(img))
    print(format_table(metrics, per_class=True))
    print(f"checkpoints and curves: {trainer.save_dir}\ndrawn detections: {pred_dir}")
    return metrics
