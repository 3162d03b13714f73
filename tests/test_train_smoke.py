"""Smoke test: RTMDet-tiny trained from scratch on the synthetic shapes dataset, on CPU, for a couple
of minutes, reaches a clearly non-trivial mAP50 on its held-out split.

Settings chosen to learn quickly on 2 shared CPU cores: small images (192 px, imgsz 192), the
`light` pipeline (resize + flip + pad: mosaic/mixup and scale jitter slow learning down on a few
dozen images), AdamW lr 0.004 at batch 8 (the recipe's 0.004 x 8/256 is for 300 epochs) with a
20-iteration warm-up, flat then cosine; one torch thread (with other jobs on the 2 cores, two
threads spin on each other and an iteration took 14 s instead of 1.8 s)."""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from rtmdet.data.synthetic import make_shapes_splits
from rtmdet.train.config import TrainConfig
from rtmdet.train.trainer import Trainer


@pytest.mark.slow
def test_tiny_learns_shapes_on_cpu(tmp_path):
    make_shapes_splits(tmp_path / "shapes", {"train": 48, "val": 16}, seed=0, image_size=(192, 192),
                       scale_range=(0.15, 0.5))
    cfg = TrainConfig(data=str(tmp_path / "shapes"), model="rtmdet-tiny", epochs=32, batch=8, imgsz=192,
                      workers=0, device="cpu", lr=0.004, warmup_iters=20, pipeline="light",
                      val_interval=100, seed=0, project=str(tmp_path), name="smoke",
                      plots=False, pretrained_backbone=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.time()
        trainer = Trainer(cfg)
        metrics = trainer.train()
        seconds = time.time() - t0
    finally:
        torch.set_num_threads(threads)
    print(f"smoke: {metrics} in {seconds:.0f} s")
    assert trainer.iteration == 32 * 6
    # observed: AP50 0.281 (AP 0.120, AP75 0.079) after 192 iterations (0.265 before the backbone
    # attention biases were zero-initialised as the reference does), the same in every run;
    # 113-130 s on 2 shared CPU cores, 178 s with a benchmark running beside it.
    # An untrained model scores ~0 (AP50 0.0001 after 30 iterations), chance-level boxes cannot
    # reach 0.15.
    assert metrics["AP50"] > 0.15
    assert metrics["AP"] > 0.05


def test_pipeline_option(tmp_path):
    """`pipeline`: recipe = mosaic/mixup then stage 2; stage2 = the stage-2 pipeline from the
    first epoch; light = resize + flip + pad. Outside the recipe, validation follows val_interval."""
    make_shapes_splits(tmp_path / "d", {"train": 2, "val": 1}, image_size=(64, 64), scale_range=(0.3, 0.6))
    base = TrainConfig(data=str(tmp_path / "d"), epochs=10, stage2_epochs=2, imgsz=64, workers=0, device="cpu",
                       project=str(tmp_path), plots=False, pretrained_backbone=False)

    def first_epoch_pipeline(pipeline):
        t = Trainer(dataclasses.replace(base, pipeline=pipeline, name=pipeline))
        t._loader(0)
        return t.train_set.stage, repr(t.train_set.pipeline)

    stage, rep = first_epoch_pipeline("recipe")
    assert stage == 1 and "CachedMosaic" in rep
    stage, rep = first_epoch_pipeline("stage2")
    assert stage == 2 and "RandomResize" in rep and "Mosaic" not in rep
    stage, rep = first_epoch_pipeline("light")
    assert rep.startswith("Compose(Resize(scale=(64, 64)") and "Random" in rep and "Crop" not in rep
    with pytest.raises(ValueError, match="pipeline must be"):
        Trainer(dataclasses.replace(base, pipeline="heavy"))
