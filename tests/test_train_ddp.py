"""Multi-process training through torchrun (DDP over gloo on CPU): the same command as on GPUs."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

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


# One torchrun training of 6 images over 2 ranks at batch 1 (3 steps per epoch, 2 epochs).
# SIG=self: after step SIG_AT, rank 1 sends SIGTERM to itself only; SIG=launcher: to torchrun,
# which forwards it to every rank (what a scheduler's stop or `docker stop` does).
RUN = """
import os, signal, sys, pathlib
sys.path.insert(0, {tests!r})
from helpers import tiny_train_cfg
from rtmdet.train.interrupt import TrainingInterrupted
from rtmdet.train.trainer import Trainer
rank, sig_at, to = int(os.environ["RANK"]), int(os.environ["SIG_AT"]), os.environ["SIG"]
def cb(tr):
    if rank == 1 and tr.iteration == sig_at:
        os.kill(os.getpid() if to == "self" else os.getppid(), signal.SIGTERM)
cfg = tiny_train_cfg({data!r}, {project!r}, name={name!r}, exist_ok=True, epochs=2, batch=1,
                     pipeline="light", seed=3, deterministic=True, speed_probe=False,
                     resume={resume!r})
out = pathlib.Path({project!r}, {name!r} + ".rank" + str(rank))
try:
    Trainer(cfg, callbacks=[cb]).train()
    out.write_text("0 finished")
except TrainingInterrupted as e:
    out.write_text(f"{{e.exit_code}} {{e}}")
    sys.exit(e.exit_code)
"""


def _torchrun(tmp_path, data, name, sig_at=0, to="self", resume=None):
    script = tmp_path / f"{name}-{sig_at}-{to}.py"
    script.write_text(RUN.format(tests=str(Path(__file__).parent), data=str(data),
                                 project=str(tmp_path / "runs"), name=name, resume=resume))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIG_AT": str(sig_at), "SIG": to,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    ranks = [(tmp_path / "runs" / f"{name}.rank{r}").read_text() for r in (0, 1)]
    return p, ranks


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_one_step_and_resume_loses_nothing(tmp_path):
    """The ranks agree at every step whether any of them was signalled: all stop after the
    same step, rank 0 saves there (mid-epoch, no save_period) while the others wait, and a
    resume under torchrun ends on the weights of the uninterrupted run."""
    from helpers import shapes_data
    from rtmdet.checkpoint import safe_load
    data = shapes_data(tmp_path / "data", train=6, val=1)
    p, ranks = _torchrun(tmp_path, data, "full")
    assert p.returncode == 0 and ranks == ["0 finished"] * 2, p.stderr[-3000:]
    p, ranks = _torchrun(tmp_path, data, "stop", sig_at=1)
    last = tmp_path / "runs" / "stop" / "last.pth"
    # the signal lands after step 1; step 2 is where every rank learns of it
    assert ranks[1] == f"143 stopped by SIGTERM; {last} holds the run at epoch 1, batch 2 " \
                       f"(continue with: rtmdet train --resume {last})", p.stderr[-3000:]
    assert ranks[0].startswith("130 stopped by a signal to another rank; ")
    mid = safe_load(last)
    assert (mid["epoch"], mid["batch"], mid["iteration"]) == (0, 2, 2)
    p, ranks = _torchrun(tmp_path, data, "stop", resume=str(last))
    assert p.returncode == 0 and ranks == ["0 finished"] * 2, p.stderr[-3000:]
    a, b = safe_load(tmp_path / "runs" / "full" / "last.pth"), safe_load(last)
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (2, 6)
    for key in ("model", "state_dict"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k}"


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_before_the_ranks_end(tmp_path):
    """SIGTERM to the launcher (a scheduler's stop): torchrun forwards it to every rank and
    kills them 30 s later; they stop at one step and last.pth holds it."""
    from helpers import shapes_data
    from rtmdet.checkpoint import safe_load
    data = shapes_data(tmp_path / "data", train=6, val=1)
    p, ranks = _torchrun(tmp_path, data, "stop", sig_at=1, to="launcher")
    assert p.returncode != 0
    last = tmp_path / "runs" / "stop" / "last.pth"
    for r in ranks:  # each rank got the launcher's SIGTERM (or stopped with the one that did)
        assert r.startswith(("143 stopped by SIGTERM; ", "130 stopped by a signal to another rank; ")), r
    ck = safe_load(last)
    where = f"epoch {ck['epoch'] + 1}, batch {ck['batch']}" if ck["batch"] else f"the end of epoch {ck['epoch']}"
    assert all(f"holds the run at {where} " in r for r in ranks), (ranks, where)
    assert 2 <= ck["iteration"] < 6
