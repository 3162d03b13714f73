"""Training speed knobs: validation, the bfloat16 autocast path on the CPU, the start-of-run speed
probe (logged, and leaves the run bit-identical), one persistent loader drawing what fresh
per-epoch loaders draw, checkpoint keys with and without torch.compile, fused AdamW only on CUDA."""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

import rtmdet
from rtmdet.checkpoint import safe_load
from rtmdet.train.config import TrainConfig, validate
from rtmdet.train.schedule import build_optimizer
from rtmdet.train.trainer import Trainer
from helpers import shapes_data, tiny_train_cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("shapes_speed"), train=4)


def cfg_for(data, project, **kw):
    return tiny_train_cfg(data, project, **{"warmup_iters": 1, "seed": 1, **kw})


@pytest.mark.parametrize("field,value,says", [
    ("amp_dtype", "float32", "amp_dtype='float32': must be float16 or bfloat16"),
    ("amp_dtype", 16, "amp_dtype=16: must be a string"),
    ("channels_last", "yes", "channels_last='yes': must be true or false"),
    ("compile", 1, "compile=1: must be true or false"),
    ("speed_probe", None, "speed_probe=None: must be true or false"),
])
def test_new_knobs_are_validated(field, value, says):
    with pytest.raises(ValueError, match=f"^{says}$".replace("(", r"\(").replace(")", r"\)")):
        validate(dataclasses.replace(TrainConfig(), **{field: value}))


def test_bfloat16_autocast_runs_on_cpu_without_a_scaler(data, tmp_path):
    t = Trainer(cfg_for(data, tmp_path, pipeline="light", amp_dtype="bfloat16", speed_probe=False))
    assert t.amp and t.amp_dtype == torch.bfloat16 and not t.scaler.is_enabled()
    assert not t.channels_last  # CUDA only
    losses = t.train_epoch(0)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert t.checkpoint(1)["scaler"] is None
    # the default float16 stays off on the CPU (CPU float16 autocast is slow and partial)
    assert not Trainer(cfg_for(data, tmp_path, pipeline="light", speed_probe=False)).amp


def _weights(data, project, **kw):
    t = Trainer(cfg_for(data, project, epochs=2, stage2_epochs=1, **kw))
    t.train()
    return t, safe_load(t.save_dir / "last.pth")


def test_speed_probe_is_logged_and_leaves_the_run_bit_identical(data, tmp_path, caplog):
    """Recipe pipeline (mosaic/mixup caches, stage switch), probe on and off: same weights, EMA,
    optimizer state and random streams afterwards."""
    with caplog.at_level(logging.INFO, logger="rtmdet.train"):
        t_on, on = _weights(data, tmp_path / "on")
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("speed probe")]
    assert len(line) == 1 and "loader" in line[0] and "img/s (0 workers) vs step" in line[0]
    assert "limits training" in line[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rtmdet.train"):
        _, off = _weights(data, tmp_path / "off", speed_probe=False)
    assert not [r for r in caplog.records if r.getMessage().startswith("speed probe")]
    for key in ("model", "state_dict"):
        assert on[key].keys() == off[key].keys()
        for k in on[key]:
            assert torch.equal(on[key][k], off[key][k]), f"{key}.{k}"
    for a, b in zip(on["optimizer"]["state"].values(), off["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert torch.equal(on["rng"]["torch"], off["rng"]["torch"])
    # the checkpoint holds the plain model's keys (no DDP / compile prefixes)
    assert set(on["model"]) == set(rtmdet.create("rtmdet-tiny", num_classes=3).state_dict())


def test_one_persistent_loader_draws_what_fresh_loaders_draw(data):
    """Two workers kept across epochs and the stage switch give the batches a fresh loader per
    epoch gives (what an exact resume relies on); a probe in between changes nothing."""
    from rtmdet.data.datasets import load_dataset
    from rtmdet.data.loader import TrainDataset, build_train_loader, loader_images_per_s

    def dataset():
        return TrainDataset(load_dataset(str(data), "train"), model_size="tiny", img_scale=64, seed=2)

    plan = [(0, 1), (1, 1), (2, 2)]
    fresh = []
    for epoch, stage in plan:
        ds = dataset()
        ds.set_stage(stage)
        fresh.append([b["imgs"].clone() for b in build_train_loader(ds, 2, num_workers=2, epoch=epoch)])
    ds = dataset()
    loader = build_train_loader(ds, 2, num_workers=2, persistent_workers=True)
    kept = []
    for epoch, stage in plan:
        if epoch == 1:
            ips, batch = loader_images_per_s(loader, 2, stage=1)
            assert ips > 0 and batch["imgs"].dtype == torch.uint8
        loader.sampler.set_epoch(epoch, stage)
        kept.append([b["imgs"].clone() for b in loader])
    assert [len(e) for e in kept] == [len(e) for e in fresh] == [2, 2, 2]
    for a, b in zip(fresh, kept):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_loader_probe_keeps_every_worker_busy(data):
    """Fewer probe batches than workers would time one batch's latency: the count is rounded up
    to a multiple of the workers."""
    from rtmdet.data.datasets import load_dataset
    from rtmdet.data.loader import TrainDataset, build_train_loader, loader_images_per_s
    ds = TrainDataset(load_dataset(str(data), "train"), model_size="tiny", img_scale=64, seed=2)
    loader = build_train_loader(ds, 1, num_workers=2, persistent_workers=True)
    asked = []
    probe = loader.sampler.probe
    loader.sampler.probe = lambda n, stage: (asked.append(n), probe(n, stage))[1]
    loader_images_per_s(loader, 1, stage=1)
    loader_images_per_s(loader, 3, stage=1)
    assert asked == [2, 2, 2, 4]  # (warm-up, timed) x 2: one batch per worker, then 1 -> 2, 3 -> 4


def test_fused_adamw_only_when_every_parameter_is_on_cuda():
    model = torch.nn.Conv2d(3, 4, 3)
    assert not build_optimizer(model, 1e-3).param_groups[0].get("fused")
    assert not build_optimizer(model, 1e-3, fused=False).param_groups[0].get("fused")


def test_compile_keeps_the_checkpoint_keys(data, tmp_path, monkeypatch):
    """compile=True wraps the training net only; last.pth keeps the model's own keys. Uses
    dynamo's eager backend (no C++ toolchain, seconds on the CPU): the wiring, not inductor."""
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile not available")
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real(m, backend="eager"))
    t = Trainer(cfg_for(data, tmp_path, pipeline="light", compile=True, speed_probe=False))
    assert t.net is not t.model and hasattr(t.net, "_orig_mod")
    t.train()
    ck = safe_load(t.save_dir / "last.pth")
    assert set(ck["model"]) == set(rtmdet.create("rtmdet-tiny", num_classes=3).state_dict())


def test_results_table_rewritten_atomically_and_resume_replaces_rows(tmp_path, monkeypatch):
    import csv

    import rtmdet.atomic as atomic
    from rtmdet.train.trainer import write_results_row
    path = tmp_path / "results.csv"
    for e in (1, 2, 3):
        write_results_row(path, {"epoch": e, "loss": 1.0 / e, "AP": ""})
    write_results_row(path, {"epoch": 3, "loss": 0.25, "AP": 0.5})  # a resumed run redoes epoch 3
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[2]["AP"] == "0.5"
    before = path.read_bytes()

    def full_disk(self, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic.AtomicFile, "write", full_disk)
    with pytest.raises(atomic.WriteError):
        write_results_row(path, {"epoch": 4, "loss": 0.2, "AP": ""})
    assert path.read_bytes() == before  # the old table, whole
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary left behind
