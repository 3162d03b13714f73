"""Does the recipe learn? rtmdet-tiny on the synthetic shapes, `pipeline=recipe` (stage 1: mosaic,
mixup, random resize/crop, HSV; stage 2 for the last `--stage2` epochs) against `pipeline=light`
(resize + flip + pad) for the same budget, COCO AP on the val split after every epoch, so the AP
across the stage switch shows.

    python benchmarks/bench_recipe_learning.py [--epochs 6] [--stage2 2] [--train 16] [--val 8]
        [--imgsz 128] [--batch 4] [--lr 0.004] [--val-thr 0.001] [--pretrained] [--device cpu]
        [--threads N]

From scratch by default (offline); `--pretrained` starts from the ImageNet backbone (downloads).
A short budget on CPU shows the shape of the curves, not converged numbers: mosaic/mixup make
stage 1 harder, so the recipe usually trails `light` until stage 2 (the clean pipeline) starts.
"""
from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import torch

from rtmdet.data.synthetic import make_shapes_splits
from rtmdet.train.config import TrainConfig
from rtmdet.train.trainer import Trainer


def run(pipeline: str, data: Path, out: Path, a) -> tuple[list[dict], float]:
    cfg = TrainConfig(data=str(data), model="rtmdet-tiny", epochs=a.epochs, stage2_epochs=a.stage2,
                      batch=a.batch, imgsz=a.imgsz, workers=0, device=a.device, lr=a.lr,
                      warmup_iters=a.warmup, pipeline=pipeline, val_interval=1, seed=a.seed,
                      project=str(out), name=pipeline, exist_ok=True, plots=False, val_batch=8,
                      val_score_thr=a.val_thr,
                      pretrained_backbone=None if a.pretrained else False)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.train()
    rows = list(csv.DictReader(open(trainer.save_dir / "results.csv")))
    return rows, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--stage2", type=int, default=2, help="last epochs on the stage-2 pipeline")
    p.add_argument("--train", type=int, default=16, help="training images")
    p.add_argument("--val", type=int, default=8, help="validation images")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.004)
    p.add_argument("--warmup", type=int, default=4, help="warm-up iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-thr", type=float, default=0.001,
                   help="score threshold of validation (0.05 is faster on CPU, AP slightly lower)")
    p.add_argument("--pretrained", action="store_true", help="start from the ImageNet backbone")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        make_shapes_splits(data, {"train": a.train, "val": a.val}, seed=a.seed,
                           image_size=(a.imgsz, a.imgsz), scale_range=(0.15, 0.5))
        res = {pl: run(pl, data, Path(tmp) / "runs", a) for pl in ("recipe", "light")}
    first2 = a.epochs - a.stage2 + 1
    print(f"\nrtmdet-tiny, {a.train} train / {a.val} val shapes at {a.imgsz}, batch {a.batch}, lr {a.lr}, "
          f"{'ImageNet backbone' if a.pretrained else 'from scratch'}, device {a.device}; "
          f"recipe: stage 2 from epoch {first2}")
    print(f"{'epoch':>5} {'stage':>5} | {'recipe AP':>9} {'AP50':>6} {'loss':>7} | "
          f"{'light AP':>8} {'AP50':>6} {'loss':>7}")
    for e in range(a.epochs):
        r, l_ = res["recipe"][0][e], res["light"][0][e]
        stage = 2 if e + 1 >= first2 else 1
        print(f"{e + 1:>5} {stage:>5} | {float(r['AP']):>9.3f} {float(r['AP50']):>6.3f} "
              f"{float(r['loss']):>7.3f} | {float(l_['AP']):>8.3f} {float(l_['AP50']):>6.3f} "
              f"{float(l_['loss']):>7.3f}")
    print(f"time: recipe {res['recipe'][1]:.0f} s, light {res['light'][1]:.0f} s")


if __name__ == "__main__":
    main()
