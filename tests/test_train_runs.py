"""Run folders, resume and fine-tuning as a user meets them: two runs started together get two
folders, --resume never ignores a flag silently, best.pth is not resumable, short runs leave
warm-up, what fine-tuning drops is logged, the progress bar shows device memory only on CUDA."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from rtmdet.cli import main
from rtmdet.train.schedule import warmup_steps
from rtmdet.train.trainer import Trainer
from helpers import ROOT, shapes_data, tiny_train_cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("shapes_runs"))


def cfg_for(data, project, **kw):
    return tiny_train_cfg(data, project, **{"pipeline": "light", **kw})


# Each process builds its Trainer, says so, waits for the go file, then trains: both have
# chosen their run folder before either starts.
RACE = textwrap.dedent("""
    import os, sys, time, torch
    torch.set_num_threads(1)
    from rtmdet.train.config import TrainConfig
    from rtmdet.train.trainer import Trainer
    data, project, ready, go = sys.argv[1:5]
    t = Trainer(TrainConfig(data=data, epochs=2, batch=2, imgsz=64, workers=0, device="cpu",
                            pipeline="light", project=project, name="conc", plots=False,
                            pretrained_backbone=False, val_interval=5))
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
    t.train()
    print(t.save_dir)
""")


def test_two_runs_started_together_get_two_folders(data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(data), str(tmp_path / "runs"),
                               str(tmp_path / f"ready{i}"), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    t0 = time.time()
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() - t0 < 240 and all(p.poll() is None for p in procs), \
            [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    dirs = sorted(o[0].strip().splitlines()[-1] for o in outs)
    assert [os.path.basename(d) for d in dirs] == ["conc", "conc2"]
    for d in dirs:
        rows = (tmp_path / "runs" / os.path.basename(d) / "results.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2"]


def test_a_run_that_never_starts_leaves_no_folder(data, tmp_path, capsys):
    assert main(["train", "--data", str(data), "--imgsz", "100", "--project", str(tmp_path)]) == 2
    assert main(["train", "--data", str(data), "imgsz=100", "--project", str(tmp_path)]) == 2
    assert "imgsz=100: must be a positive multiple of 32" in capsys.readouterr().err
    Trainer(cfg_for(data, tmp_path))  # building a trainer writes nothing either
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def stopped_run(data, tmp_path_factory):
    """A 2-epoch run stopped (Ctrl-C) after its first epoch: last.pth at epoch 1, best.pth."""
    project = tmp_path_factory.mktemp("stopped")

    def stop(tr):
        if tr.iteration > tr.iters_per_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg_for(data, project, epochs=2, name="run", val_interval=1), callbacks=[stop]).train()
    return project / "run"


def test_resume_refuses_flags_it_cannot_honour_in_one_line(stopped_run, capsys):
    last = str(stopped_run / "last.pth")
    assert main(["train", "--resume", last, "--epochs", "8", "--batch", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs=8 (the run has 2)" in err[0] and "batch=4 (the run has 2)" in err[0]
    assert "--weights" in err[0]
    assert main(["train", "--resume", last, "lr=0.1"]) == 2
    assert "lr=0.1 (the run has None)" in capsys.readouterr().err
    # best.pth holds weights only
    assert main(["train", "--resume", str(stopped_run / "best.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training state" in err[0] and "last.pth" in err[0], err


def test_resume_honours_where_it_runs_and_finishes(stopped_run, capsys):
    last = str(stopped_run / "last.pth")
    # device and workers may change; the same value as the run's is not a change
    assert main(["train", "--resume", last, "--workers", "0", "--device", "cpu", "--epochs", "2"]) == 0
    rows = (stopped_run / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2"]
    # a finished run has nothing to resume: said, not exit 0 without training
    assert main(["train", "--resume", last]) == 2
    assert "already finished its 2 epochs" in capsys.readouterr().err


def test_train_key_value_overrides_are_type_checked(data, tmp_path, capsys):
    for arg, msg in [("lr=abc", "lr='abc': must be a number"), ("epochs=2.5", "epochs=2.5: must be a whole number"),
                     ("amp=maybe", "amp='maybe': must be true or false"), ("lr=-1", "lr=-1.0: must be > 0"),
                     ("warmup_ratio=2", "warmup_ratio=2.0: must be between 0 and 1"),
                     ("grad_accum=0", "grad_accum=0: must be >= 1"), ("nope=1", "unknown config key 'nope'")]:
        assert main(["train", "--data", str(data), "--project", str(tmp_path), arg]) == 2, arg
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (arg, err)
    with pytest.raises(ValueError, match="batch=0"):
        Trainer(cfg_for(data, tmp_path, batch=0))
    assert list(tmp_path.iterdir()) == []


def test_warmup_is_scaled_to_the_run():
    assert warmup_steps(138_000) == 1000  # the reference recipe keeps its 1000 steps
    assert warmup_steps(30) == 10  # 3 epochs of 80 images at batch 8: a minimum of 10 steps
    assert warmup_steps(6) == 3  # never more than half the run
    assert warmup_steps(960) == 96  # a tenth of a medium run
    assert warmup_steps(30, warmup_iters=0) == 0


def test_log_says_the_lr_in_use_and_no_cpu_memory(data, tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="rtmdet.train"):
        t = Trainer(cfg_for(data, tmp_path, epochs=4, lr=0.01))
        t.train()
    assert t.warmup == 2  # 4 steps
    assert "lr 1.00e-07 now, 1.00e-02 after a 2-step linear warm-up" in caplog.text
    assert "mem=" not in capsys.readouterr().err


def test_finetuning_a_mask_checkpoint_as_a_detector_logs_what_is_dropped(data, tmp_path, caplog):
    import rtmdet
    from rtmdet.checkpoint import atomic_save
    ins = rtmdet.create("rtmdet-ins-tiny", num_classes=3)
    atomic_save({"state_dict": ins.state_dict()}, tmp_path / "ins.pth")
    with caplog.at_level(logging.INFO, logger="rtmdet.train"):
        # the detector asked for by name (without one, the weights' own rtmdet-ins-tiny trains)
        Trainer(cfg_for(data, tmp_path / "p", weights=str(tmp_path / "ins.pth")), explicit={"model", "weights"})
    line = next(r.getMessage() for r in caplog.records if "dropped" in r.getMessage())
    assert "bbox_head.rtm_kernel" in line and "ins.pth" in line and "RTMDet" in line


def test_time_left_reads_as_a_person_would_say_it():
    from rtmdet.train.trainer import duration
    assert [duration(s) for s in (0.4, 42, 59.6, 425, 3599, 3600, 10920, 360000)] == \
        ["0s", "42s", "1m00s", "7m05s", "59m59s", "1h00m", "3h02m", "100h00m"]


def test_finetuning_weights_alone_trains_their_own_architecture(data, tmp_path, caplog):
    """`--weights <an rtmdet-s>` without --model builds rtmdet-s (not the default tiny, which
    cannot take the weights); a model of another size named with them is a one-line error."""
    import rtmdet
    from rtmdet.checkpoint import atomic_save
    from rtmdet.train.trainer import weights_model
    s = rtmdet.create("rtmdet-s", num_classes=3)
    atomic_save({"state_dict": s.state_dict()}, tmp_path / "s.pth")
    with caplog.at_level(logging.INFO, logger="rtmdet.train"):
        t = Trainer(cfg_for(data, tmp_path / "p", weights=str(tmp_path / "s.pth")), explicit={"weights"})
    assert t.cfg.model == "rtmdet-s" and t.model.backbone.stem[0].conv.out_channels == 16
    assert any("model rtmdet-s: the architecture of the weights" in r.getMessage() for r in caplog.records)
    for k, v in t.model.state_dict().items():
        if not k.startswith("bbox_head.rtm_cls") and v.is_floating_point():
            assert torch.equal(v.cpu(), s.state_dict()[k]), k
    with pytest.raises(ValueError, match="are an rtmdet-s; model=rtmdet-m is another size"):
        Trainer(cfg_for(data, tmp_path / "p", weights=str(tmp_path / "s.pth"), model="rtmdet-m"),
                explicit={"weights", "model"})
    assert weights_model("RTMDet-S") == "rtmdet-s"  # a zoo name: nothing downloaded to tell
