"""Gradient accumulation: `grad_accum=2` at batch B gives the gradient of batch 2B, optimizer steps
and the lr schedule count optimizer steps (not batches)."""
from __future__ import annotations

import math
import types

import pytest
import torch

from rtmdet.train import losses as losses_mod
from rtmdet.train import trainer as tr_mod
from rtmdet.train.config import TrainConfig
from rtmdet.train.losses import rtmdet_loss
from rtmdet.train.schedule import lr_factor


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from rtmdet.data.synthetic import make_shapes_splits
    root = tmp_path_factory.mktemp("shapes_accum")
    make_shapes_splits(root, {"train": 8, "val": 2}, image_size=(64, 64), scale_range=(0.3, 0.6))
    return root


def _per_image_mean_loss(real):
    """The RTMDet loss normalises by the batch's summed assign metrics, so halves of a batch are
    not exactly half its loss. Averaging the per-image losses makes the objective a plain mean
    over images, for which accumulation of two halves / 2 must equal the whole batch."""
    def loss(out, boxes, labels, img_shape, strides=(8, 16, 32)):
        B = out[0][0].shape[0]
        per = [real(([c[i:i + 1] for c in out[0]], [b[i:i + 1] for b in out[1]]), [boxes[i]], [labels[i]],
                    img_shape, strides=strides) for i in range(B)]
        return {k: [sum(p[k][lv] for p in per) / B for lv in range(len(per[0][k]))]
                for k in ("loss_cls", "loss_bbox")}
    return loss


def _freeze_bn(model: torch.nn.Module) -> None:
    """BN in eval mode for good (the trainer calls .train()): batch statistics would couple the
    images of a batch, and a batch of 2B is not two batches of B."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.train = types.MethodType(lambda self, mode=True: self, m)


def _first_step_grads(data, tmp_path, name, batch, grad_accum, monkeypatch):
    monkeypatch.setattr(losses_mod, "rtmdet_loss", _per_image_mean_loss(rtmdet_loss))
    cfg = TrainConfig(data=str(data), model="rtmdet-tiny", epochs=1, batch=batch, grad_accum=grad_accum,
                      imgsz=64, workers=0, device="cpu", lr=0.01, warmup_iters=0, stage2_epochs=1,
                      val_interval=100, seed=5, project=str(tmp_path), name=name, plots=False,
                      pretrained_backbone=False)
    t = tr_mod.Trainer(cfg)
    t.val_data = None
    _freeze_bn(t.model)
    grads, lrs = [], []
    real_step = t.optimizer.step

    def step(*a, **k):
        grads.append({n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None})
        lrs.append(t.optimizer.param_groups[0]["lr"])
        return real_step(*a, **k)

    t.optimizer.step = step
    t.train()
    return t, grads, lrs


def test_accumulated_gradient_equals_double_batch(data, tmp_path, monkeypatch):
    big, g_big, _ = _first_step_grads(data, tmp_path, "big", 8, 1, monkeypatch)
    acc, g_acc, _ = _first_step_grads(data, tmp_path, "acc", 4, 2, monkeypatch)
    assert big.iteration == acc.iteration == 1 and len(g_big) == len(g_acc) == 1
    assert big.iters_per_epoch == acc.iters_per_epoch == 1
    assert big.lr == acc.lr == 0.01
    a, b = g_big[0], g_acc[0]
    assert a.keys() == b.keys() and len(a) > 50
    for n in a:
        torch.testing.assert_close(b[n], a[n], rtol=1e-4, atol=1e-5 * float(a[n].abs().max()) + 1e-9, msg=n)
    # and the same gradients made the same AdamW update
    for (n, p), q in zip(big.model.named_parameters(), acc.model.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=2e-4, msg=n)


def test_accumulation_counts_optimizer_steps_and_schedules_by_them(data, tmp_path, monkeypatch):
    # 8 images, batch 2, accumulate 3 -> 4 batches -> steps after batches 3 and 4 (the remainder)
    t, grads, lrs = _first_step_grads(data, tmp_path, "count", 2, 3, monkeypatch)
    assert t.iters_per_epoch == math.ceil(4 / 3) == 2
    assert t.iteration == 2 == t.scheduler.iteration == t.ema.steps
    assert t.lr == 0.01  # explicit lr; the default would scale with batch x world x grad_accum
    expected = [0.01 * lr_factor(i, 2, 1, 0, 1e-5, 0.05) for i in range(2)]
    assert lrs == pytest.approx(expected)


def test_remainder_group_is_averaged_over_its_own_size(data, tmp_path, monkeypatch):
    """An epoch's last, incomplete group is divided by the batches it holds, not by grad_accum:
    batch 2 x accumulate 5 over 4 batches is one step with the gradient of batch 8."""
    _, g_big, _ = _first_step_grads(data, tmp_path, "big8", 8, 1, monkeypatch)
    t, g_rem, _ = _first_step_grads(data, tmp_path, "rem", 2, 5, monkeypatch)
    assert t.iteration == 1 and len(g_rem) == 1
    for n, g in g_big[0].items():
        torch.testing.assert_close(g_rem[0][n], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()) + 1e-9, msg=n)


def test_default_lr_scales_with_accumulated_batch(data, tmp_path):
    cfg = TrainConfig(data=str(data), model="rtmdet-tiny", epochs=1, batch=2, grad_accum=4, imgsz=64,
                      workers=0, device="cpu", project=str(tmp_path), name="lr", plots=False,
                      pretrained_backbone=False)
    t = tr_mod.Trainer(cfg)
    assert t.lr == pytest.approx(0.004 * 8 / 256)
