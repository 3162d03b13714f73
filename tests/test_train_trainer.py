"""Trainer: atomic checkpoints, exact resume after SIGKILL, NaN stop, best.pth loads, CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import rtmdet
from rtmdet.checkpoint import safe_load

ROOT = Path(__file__).resolve().parents[1]

# Runs one training in a fresh process. KILL_AT=n sends SIGKILL to itself right after optimizer
# step n (a real crash: nothing gets flushed or saved); INT_AT=n sends SIGINT (Ctrl-C) instead
# (INT_SIG=SIGTERM: that signal), to the whole process group (data loader workers included) with
# INT_GROUP=1.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from rtmdet.train.config import TrainConfig
    from rtmdet.train.interrupt import TrainingInterrupted
    from rtmdet.train.trainer import Trainer
    data, out, name, resume = sys.argv[1:5]
    kill_at = int(os.environ.get("KILL_AT", "0"))
    int_at = int(os.environ.get("INT_AT", "0"))
    cbs = []
    if kill_at:
        def cb(tr):
            if tr.iteration == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        cbs.append(cb)
    if int_at:
        sig = getattr(signal, os.environ.get("INT_SIG", "SIGINT"))
        def cb(tr):
            if tr.iteration == int_at:
                if os.environ.get("INT_GROUP"):
                    os.killpg(os.getpgid(0), sig)
                else:
                    os.kill(os.getpid(), sig)
        cbs.append(cb)
    cfg = TrainConfig(data=data, model="rtmdet-tiny", epochs=2, imgsz=64,
                      workers=int(os.environ.get("WORKERS", "0")),
                      batch=int(os.environ.get("BATCH", "2")),
                      save_period=int(os.environ.get("SAVE_PERIOD", "0")),
                      device="cpu", warmup_iters=2, stage2_epochs=1, val_interval=1, seed=3,
                      deterministic=True, project=out, name=name, exist_ok=True, plots=False,
                      pretrained_backbone=False, resume=None if resume == "-" else resume)
    try:
        Trainer(cfg, callbacks=cbs).train()
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        sys.exit(e.exit_code)
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from rtmdet.data.synthetic import make_shapes_splits
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_splits(root, {"train": 4, "val": 2}, image_size=(64, 64), scale_range=(0.3, 0.6))
    return root


def _run(data, out, name, resume="-", kill_at=0, **extra_env):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT": str(kill_at), "OMP_NUM_THREADS": "1",
           **{k: str(v) for k, v in extra_env.items()}}
    # its own session: a SIGINT to its process group reaches it and its workers, not pytest
    return subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(out), name, resume],
                          env=env, capture_output=True, text=True, timeout=300, start_new_session=True)


def _same_weights(a, b) -> None:
    for key in ("model", "state_dict"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k}"


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(data, tmp_path):
    full = _run(data, tmp_path, "full")
    assert full.returncode == 0, full.stderr[-3000:]
    # 4 images / batch 2 = 2 steps per epoch; die after step 3 = in the middle of epoch 2
    crashed = _run(data, tmp_path, "crash", kill_at=3)
    assert crashed.returncode == -signal.SIGKILL
    mid = safe_load(tmp_path / "crash" / "last.pth")
    assert mid["epoch"] == 1 and mid["iteration"] == 2  # the epoch-1 checkpoint survived intact
    assert not [p for p in (tmp_path / "crash").iterdir() if p.name.endswith(".tmp")]
    resumed = _run(data, tmp_path, "crash", resume=str(tmp_path / "crash" / "last.pth"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = safe_load(tmp_path / "full" / "last.pth")
    b = safe_load(tmp_path / "crash" / "last.pth")
    assert a["epoch"] == b["epoch"] == 2 and a["iteration"] == b["iteration"] == 4
    for key in ("model", "state_dict"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k}"
    for s_a, s_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(s_a["exp_avg"], s_b["exp_avg"])
    # outputs next to the checkpoints; best.pth (EMA weights) rebuilds with rtmdet.load
    for f in ("config.yaml", "results.csv", "best.pth"):
        assert (tmp_path / "full" / f).is_file(), f
    model = rtmdet.load(tmp_path / "full" / "best.pth")
    assert model.cfg.num_classes == 3 and model.class_names == ["rectangle", "ellipse", "triangle"]
    assert len((tmp_path / "full" / "results.csv").read_text().strip().splitlines()) == 3


def test_mid_epoch_checkpoint_resume_loses_nothing(data, tmp_path):
    """save_period=1: a checkpoint after every step; killed inside epoch 2, the run resumes from
    the step before the crash (not from the epoch start) and ends on the uninterrupted weights."""
    full = _run(data, tmp_path, "full", BATCH=1)
    assert full.returncode == 0, full.stderr[-3000:]
    # 4 images / batch 1: steps 1-4 are epoch 1, 5-8 epoch 2; die right after step 7
    crashed = _run(data, tmp_path, "crash", kill_at=7, BATCH=1, SAVE_PERIOD=1)
    assert crashed.returncode == -signal.SIGKILL
    mid = safe_load(tmp_path / "crash" / "last.pth")
    assert (mid["epoch"], mid["batch"], mid["iteration"]) == (1, 2, 6)
    resumed = _run(data, tmp_path, "crash", resume=str(tmp_path / "crash" / "last.pth"), BATCH=1,
                   SAVE_PERIOD=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = safe_load(tmp_path / "full" / "last.pth")
    b = safe_load(tmp_path / "crash" / "last.pth")
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (2, 8) and b["batch"] == 0
    for key in ("model", "state_dict"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k}"
    rows_a = (tmp_path / "full" / "results.csv").read_text().splitlines()
    rows_b = (tmp_path / "crash" / "results.csv").read_text().splitlines()
    # the epoch-2 loss average includes the steps computed before the crash
    assert rows_a[2].split(",")[2:5] == rows_b[2].split(",")[2:5]


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_saves_at_the_last_step_and_resume_loses_nothing(data, tmp_path, workers):
    """Ctrl-C (SIGINT; with workers, to the whole process group as a terminal sends it) right
    after step 6 of 8: the step finishes, last.pth is written there (inside epoch 2, with no
    save_period), the run exits 130 saying how to continue; the resumed run ends on the weights
    of the uninterrupted one."""
    full = _run(data, tmp_path, "full", BATCH=1, WORKERS=workers)
    assert full.returncode == 0, full.stderr[-3000:]
    stopped = _run(data, tmp_path, "stop", BATCH=1, WORKERS=workers, INT_AT=6, INT_GROUP=int(workers > 0))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    last = tmp_path / "stop" / "last.pth"
    assert f"continue with: rtmdet train --resume {last}" in stopped.stderr
    assert "saving at the last finished step" in stopped.stderr
    mid = safe_load(last)
    assert (mid["epoch"], mid["batch"], mid["iteration"]) == (1, 2, 6)
    resumed = _run(data, tmp_path, "stop", resume=str(last), BATCH=1, WORKERS=workers)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = safe_load(tmp_path / "full" / "last.pth"), safe_load(last)
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (2, 8)
    _same_weights(a, b)


def test_sigterm_saves_at_the_last_step_with_its_own_exit_code(data, tmp_path):
    """SIGTERM (kill, docker stop, a scheduler's preemption) to the whole group, workers too,
    right after step 6 of 8: saved there like Ctrl-C, exit 143; the resume ends on the weights
    of the uninterrupted run."""
    full = _run(data, tmp_path, "full", BATCH=1, WORKERS=2)
    assert full.returncode == 0, full.stderr[-3000:]
    stopped = _run(data, tmp_path, "stop", BATCH=1, WORKERS=2, INT_AT=6, INT_GROUP=1, INT_SIG="SIGTERM")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    last = tmp_path / "stop" / "last.pth"
    assert f"stopped by SIGTERM; {last} holds the run at epoch 2, batch 2" in stopped.stderr
    mid = safe_load(last)
    assert (mid["epoch"], mid["batch"], mid["iteration"]) == (1, 2, 6)
    resumed = _run(data, tmp_path, "stop", resume=str(last), BATCH=1, WORKERS=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_weights(safe_load(tmp_path / "full" / "last.pth"), safe_load(last))


def _spin(stop=None):
    for _ in range(10**6):  # a signal's handler runs between bytecodes of the main thread
        if stop is not None and stop:
            return


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_raises_the_flag_a_second_interrupts(sig):
    from rtmdet.train.interrupt import stop_on_signals
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt):
        with stop_on_signals() as stop:
            os.kill(os.getpid(), sig)
            _spin(stop)
            assert stop and stop.reason == {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}[sig]
            assert stop.exit_code == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
            os.kill(os.getpid(), sig)
            _spin()
    assert signal.getsignal(sig) is before
    with stop_on_signals(enabled=False) as stop:
        assert signal.getsignal(sig) is before and not stop


def test_training_from_the_cli_takes_sigterm_over_and_gives_it_back():
    """`rtmdet train` runs inside the CLI's SIGTERM-raises handler: the trainer must still get
    the signal as a flag (save, then stop), and leave the CLI's handler as it found it."""
    from rtmdet.signals import raise_terminated, sigterm_as_interrupt
    from rtmdet.train.interrupt import stop_on_signals
    with sigterm_as_interrupt():
        with stop_on_signals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            _spin(stop)
            assert stop.reason == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is raise_terminated
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_under_ddp_repeats_do_not_interrupt_the_save():
    """torchrun forwards a terminal's Ctrl-C to workers that already got it: the second copy
    must not cut the save short."""
    from rtmdet.train.interrupt import stop_on_signals
    with stop_on_signals(repeats_interrupt=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        _spin(stop)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        _spin()
        assert stop.reason == "Ctrl-C"


def test_a_host_applications_sigterm_handler_is_left_alone():
    from rtmdet.train.interrupt import stop_on_signals
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with stop_on_signals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            _spin()
            assert not stop and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    from rtmdet.train import losses as losses_mod
    from rtmdet.train import trainer as tr_mod
    from rtmdet.train.config import TrainConfig
    calls = {"n": 0}
    real = losses_mod.rtmdet_loss

    def poisoned(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 2 goes bad
            out["loss_cls"][0] = out["loss_cls"][0] * float("nan")
        return out

    monkeypatch.setattr(losses_mod, "rtmdet_loss", poisoned)
    cfg = TrainConfig(data=str(data), model="rtmdet-tiny", epochs=2, batch=2, imgsz=64, workers=0,
                      device="cpu", warmup_iters=2, stage2_epochs=1, val_interval=5, project=str(tmp_path),
                      name="nan", plots=False, pretrained_backbone=False,
                      speed_probe=False)  # the probe's steps would count as loss calls
    t = tr_mod.Trainer(cfg)
    with pytest.raises(tr_mod.NonFiniteLossError, match="not finite.*epoch 2"):
        t.train()
    ck = safe_load(tmp_path / "nan" / "last.pth")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_finetune_reinitialises_classifier_when_classes_differ(tmp_path):
    from rtmdet.train.trainer import load_finetune_weights
    src = rtmdet.create("rtmdet-tiny", num_classes=80)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "w.pth")
    dst = rtmdet.create("rtmdet-tiny", num_classes=3)
    skipped = load_finetune_weights(dst, str(tmp_path / "w.pth"))
    assert sorted(skipped) == sorted(f"bbox_head.rtm_cls.{i}.{p}" for i in range(3) for p in ("weight", "bias"))
    assert torch.equal(dst.backbone.stem[0].conv.weight, src.backbone.stem[0].conv.weight)


def test_cli_train_usage_errors(capsys):
    from rtmdet.cli import main
    assert main(["train", "--data", "/no/such/dataset", "--epochs", "1"]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert main(["train", "--data", "x", "no_such_key=1"]) == 2
