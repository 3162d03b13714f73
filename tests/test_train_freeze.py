"""`freeze=N`: the first N of the backbone's (stem, stage1..stage4) keep their weights and
BatchNorm statistics through training (the reference's `frozen_stages=N-1`); the rest learns."""
from __future__ import annotations

import pytest
import torch

import rtmdet
from helpers import shapes_data, tiny_train_cfg
from rtmdet.checkpoint import safe_load
from rtmdet.train.trainer import Trainer

PARTS = ("stem", "stage1", "stage2", "stage3", "stage4")


def test_freeze_marks_the_leading_parts_and_keeps_their_batchnorm_in_eval():
    model = rtmdet.create("rtmdet-tiny", num_classes=3)
    model.backbone.freeze(2)
    model.train()
    for name, p in model.named_parameters():
        frozen = name.startswith(("backbone.stem.", "backbone.stage1."))
        assert p.requires_grad is not frozen, name
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for n, m in bns:
        assert m.training is not n.startswith(("backbone.stem.", "backbone.stage1.")), n
    model.eval()
    assert not any(m.training for _, m in bns)
    with pytest.raises(ValueError, match="freeze=6"):
        model.backbone.freeze(6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("freeze") / "data", train=4, val=1)


def test_a_run_leaves_the_frozen_parts_as_they_were_and_trains_the_rest(data, tmp_path):
    t = Trainer(tiny_train_cfg(data, tmp_path, epochs=2, freeze=3, pipeline="light", plots=False,
                               speed_probe=True, val_interval=1))
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.train()
    ck = safe_load(tmp_path / "exp" / "last.pth")
    frozen = tuple(f"backbone.{p}." for p in PARTS[:3])
    moved = set()
    for k, v in ck["model"].items():
        if k.startswith(frozen):  # weights and running statistics alike
            assert torch.equal(v, before[k]), k
        elif v.is_floating_point() and not torch.equal(v, before[k]):
            moved.add(k.split(".")[1] if k.startswith("backbone.") else k.split(".")[0])
    assert {"stage3", "stage4", "neck", "bbox_head"} <= moved
    # the EMA (best.pth) averages a constant: equal up to the average's rounding
    for k, v in ck["state_dict"].items():
        if k.startswith(frozen) and v.is_floating_point():
            torch.testing.assert_close(v, before[k], rtol=1e-6, atol=1e-7, msg=k)
    # only what trains is in the optimizer
    n_opt = sum(len(g["params"]) for g in t.optimizer.param_groups)
    assert n_opt == sum(1 for p in t.model.parameters() if p.requires_grad) < len(list(t.model.parameters()))


def test_freeze_is_checked_and_kept_on_resume(data, tmp_path):
    """A resume cannot change `freeze`, and freezes what the run froze (the resumed run's
    frozen weights are still the first run's initial ones)."""
    from rtmdet.train.config import validate
    from rtmdet.train.interrupt import TrainingInterrupted
    with pytest.raises(ValueError, match="freeze=6: must be between 0 and 5"):
        validate(tiny_train_cfg(data, tmp_path, freeze=6))
    cfg = tiny_train_cfg(data, tmp_path, epochs=2, batch=1, freeze=5, pipeline="light")
    t = Trainer(cfg, callbacks=[lambda tr: tr.iteration == 2 and tr.stop.set("Ctrl-C")])
    before = {k: v.clone() for k, v in t.model.state_dict().items() if k.startswith("backbone.")}
    with pytest.raises(TrainingInterrupted):
        t.train()
    last = tmp_path / "exp" / "last.pth"
    with pytest.raises(ValueError, match=r"cannot change freeze=0 \(the run has 5\)"):
        Trainer(tiny_train_cfg(data, tmp_path, freeze=0, resume=str(last)), explicit={"freeze"})
    Trainer(tiny_train_cfg(data, tmp_path, resume=str(last)), explicit=set()).train()
    ck = safe_load(last)
    assert ck["epoch"] == 2 and ck["iteration"] == 8
    for k, v in before.items():
        assert torch.equal(ck["model"][k], v), k
