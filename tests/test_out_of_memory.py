"""A GPU out of memory ends a command with one line that says what to lower and what was kept,
not a traceback. The error is raised by hand here (torch.cuda.OutOfMemoryError, what CUDA's
allocator raises), so these run on the CPU."""
from __future__ import annotations

import pytest
import torch

from helpers import shapes_data
from rtmdet.checkpoint import safe_load
from rtmdet.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("oom") / "data", train=4, val=1)


def _train(data, project, *extra):
    return main(["train", "--data", str(data), "--epochs", "2", "--batch", "2", "--imgsz", "64",
                 "--workers", "0", "--device", "cpu", "--project", str(project), "pretrained_backbone=false",
                 "pipeline=light", "plots=false", "speed_probe=false", "val_interval=1", *extra])


def test_a_training_step_out_of_memory_says_what_to_lower(data, tmp_path, monkeypatch, capsys):
    import rtmdet.train.trainer as tr
    real, calls = tr.forward_loss, []

    def forward_loss(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # epoch 2 (2 steps per epoch), its second batch
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)
    monkeypatch.setattr(tr, "forward_loss", forward_loss)
    assert _train(data, tmp_path) == 1
    last = tmp_path / "exp" / "last.pth"
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"rtmdet train: out of GPU memory in a training step at epoch 2, batch 1 (batch=2, "
                   f"imgsz=64); the last checkpoint is {last}: train with less per step, e.g. "
                   f"batch=1 grad_accum=2 (the same total batch and lr), from its weights "
                   f"(--weights {last})")
    assert safe_load(last)["epoch"] == 1


def test_a_validation_out_of_memory_keeps_the_epoch_and_the_resume_lowers_val_batch(data, tmp_path,
                                                                                     monkeypatch, capsys):
    import rtmdet.train.trainer as tr
    real = tr.Trainer.validate

    def validate(self):
        if self.cfg.val_batch > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(self)
    monkeypatch.setattr(tr.Trainer, "validate", validate)
    assert _train(data, tmp_path) == 1
    last = tmp_path / "exp" / "last.pth"
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"rtmdet train: out of GPU memory validating epoch 1 (val_batch=8); {last} holds the "
                   f"epoch (its validation did not run): continue with rtmdet train --resume {last} val_batch=4")
    assert safe_load(last)["epoch"] == 1
    assert main(["train", "--resume", str(last), "val_batch=4"]) == 0
    assert safe_load(last)["epoch"] == 2


def test_predict_out_of_memory_is_one_line(tiny3_weights, tmp_path, monkeypatch, capsys):
    import cv2
    import numpy as np
    import rtmdet.cli.predict as predict_cli
    real = predict_cli.open_model

    class Full:
        def __init__(self, m):
            self.m = m

        def __getattr__(self, name):
            return getattr(self.m, name)

        def predict(self, *a, **k):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(predict_cli, "open_model", lambda args: Full(real(args)))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    assert main(["predict", str(tmp_path / "a.png"), "--weights", tiny3_weights, "--save-dir",
                 str(tmp_path / "o"), "--batch", "16"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "rtmdet predict: error: out of GPU memory at --batch 16: lower --batch (or use --half)"
