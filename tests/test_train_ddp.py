"""Multi-process training through torchrun (DDP over gloo on CPU): the same command as on GPUs."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

import rtmdet


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    from rtmdet.data.synthetic import make_shapes_splits
    data = tmp_path / "data"
    make_shapes_splits(data, {"train": 8, "val": 2}, image_size=(128, 128), scale_range=(0.2, 0.5))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "rtmdet", "train", "--data", str(data), "--model", "rtmdet-tiny", "--epochs", "2",
           "--batch", "2", "--imgsz", "128", "--workers", "0", "--device", "cpu",
           "--project", str(tmp_path), "--name", "ddp", "warmup_iters=1", "pipeline=light", "sync_bn=true",
           "pretrained_backbone=false"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "sync_bn=true needs CUDA" in r.stdout + r.stderr  # CPU: a warning, not a crash
    run = tmp_path / "ddp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ddp"], "only rank 0 writes a run dir"
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r_["epoch"] for r_ in rows] == ["1", "2"], "one log row per epoch, from rank 0 only"
    ck = torch.load(run / "last.pth", map_location="cpu", weights_only=True)
    # 8 images over 2 processes at batch 2: 2 optimizer steps per epoch, 4 in all
    assert ck["iteration"] == 4 and ck["epoch"] == 2
    assert not any(k.startswith("module.") for k in ck["state_dict"])
    model = rtmdet.load(run / "best.pth")
    assert model.cfg.num_classes == 3
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
