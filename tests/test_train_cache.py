"""`cache=true`: training images decoded once into memory. The same pixels, so the same run;
the pipeline never writes into the cache; a cache that would crowd memory is skipped."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from helpers import shapes_data, tiny_train_cfg
from rtmdet.checkpoint import safe_load
from rtmdet.data.datasets import load_dataset
from rtmdet.data.loader import TrainDataset, load_image
from rtmdet.train import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("cache") / "data", train=6, val=1)


def test_cached_samples_are_the_decoded_ones_and_stay_so(data):
    ds = load_dataset(data, split="train")
    plain, cached = TrainDataset(ds, img_scale=64, seed=1), TrainDataset(ds, img_scale=64, seed=1)
    assert cached.cache_images(threads=2, progress=False) == cached.cache_bytes() == 6 * 64 * 64 * 3
    for epoch in range(2):  # stage 1 (mosaic, mixup, HSV in place...) then stage 2
        for i in range(len(plain)):
            a, b = plain[epoch, 1 + epoch, i], cached[epoch, 1 + epoch, i]
            assert torch.equal(a["img"], b["img"]) and torch.equal(a["boxes"], b["boxes"])
    # a pipeline that may hand the decoded array on and write into it (same-size resize, flip)
    from rtmdet.data.transforms import PAD_VAL, Compose, Pad, RandomFlip, Resize, YOLOXHSVRandomAug
    light = Compose([Resize((64, 64)), RandomFlip(1.0), YOLOXHSVRandomAug(), Pad((64, 64), PAD_VAL)])
    cached.pipelines = {1: light, 2: light}
    for i in range(len(cached)):
        cached[0, 1, i]
    for rec, img in zip(cached.records, cached._cache):
        assert np.array_equal(img, load_image(ds.image_path(rec))), "the pipeline wrote into the cache"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_cached_run_is_the_same_run(data, tmp_path, workers):
    kw = dict(epochs=2, stage2_epochs=1, pipeline="recipe", batch=2, workers=workers, deterministic=True,
              speed_probe=False)
    runs = [train(tiny_train_cfg(data, tmp_path, name=f"c{c}", cache=c, **kw)) for c in (True, False)]
    a, b = (safe_load(r.last) for r in runs)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_cache_too_big_for_memory_is_skipped(data, tmp_path, monkeypatch, caplog):
    import rtmdet.train.trainer as trainer
    monkeypatch.setattr(trainer, "available_memory", lambda: 1000)
    with caplog.at_level(logging.WARNING, logger="rtmdet"):
        r = train(tiny_train_cfg(data, tmp_path, cache=True, speed_probe=False))
    assert any("not cached" in m and "GB decoded" in m for m in caplog.messages)
    assert r.last.is_file()
