"""Optimizer groups, the lr schedule at key iterations, and ExpMomentumEMA."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import rtmdet
from rtmdet.train.ema import ExpMomentumEMA
from rtmdet.train.schedule import RTMDetLRScheduler, build_optimizer, lr_factor, param_groups, scaled_lr


def test_scaled_lr():
    assert scaled_lr(256) == pytest.approx(0.004)
    assert scaled_lr(32) == pytest.approx(0.0005)


def test_param_groups_no_decay_on_norms_and_biases():
    model = rtmdet.create("rtmdet-tiny", num_classes=3)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids_decay = {id(p) for p in decay["params"]}
    ids_no = {id(p) for p in no_decay["params"]}
    assert not ids_decay & ids_no
    assert len(ids_decay) + len(ids_no) == len(list(model.parameters()))  # shared convs counted once
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert id(m.weight) in ids_no and id(m.bias) in ids_no, name
        if isinstance(m, nn.Conv2d):
            assert id(m.weight) in ids_decay, name
            if m.bias is not None:
                assert id(m.bias) in ids_no, name


def _expected(it, ipe, epochs, base=0.004, warm=1000, start=1e-5, eta=0.05):
    # written independently: mmengine LinearLR closed form x CosineAnnealingLR closed form
    f = 1.0
    if it < warm:
        f = start + (1 - start) * it / warm
    lr = base * f
    begin, end = epochs // 2 * ipe, epochs * ipe
    if it >= begin:
        eta_min = base * eta
        t = min(it, end) - begin
        lr = eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * t / (end - begin)))
    return lr


@pytest.mark.parametrize("it", [0, 1, 500, 999, 1000, 1001, 150 * 100 - 1, 150 * 100, 225 * 100,
                                300 * 100 - 1, 300 * 100])
def test_schedule_key_iterations(it):
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, 0.004, 0.05)
    sched = RTMDetLRScheduler(opt, iters_per_epoch=100, epochs=300)
    sched.load_state_dict({"iteration": it})
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(_expected(it, 100, 300), rel=1e-9, abs=1e-15)
    assert lr_factor(it, 100, 300) * 0.004 == pytest.approx(_expected(it, 100, 300), rel=1e-9)


def test_schedule_landmarks():
    assert lr_factor(0, 100, 300) == pytest.approx(1e-5)
    assert lr_factor(1000, 100, 300) == 1.0
    assert lr_factor(14999, 100, 300) == 1.0  # flat until epoch 150
    assert lr_factor(22500, 100, 300) == pytest.approx(0.05 + 0.95 * 0.5)  # half-way through cosine
    assert lr_factor(30000, 100, 300) == pytest.approx(0.05)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, 1.0)
    sched = RTMDetLRScheduler(opt, 10, 4, warmup_iters=5)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-5) and lrs[5] == 1.0 and lrs[19] == 1.0
    assert lrs[20] == pytest.approx(1.0) and lrs[39] > 0.05 and lrs[39] < 0.06


def test_ema_exp_momentum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ExpMomentumEMA(model, momentum=0.0002, gamma=2000)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    ema.update(model)  # step 0 copies
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 3))  # moves BN running stats (buffers averaged too)
        m = (1 - 0.0002) * math.exp(-(1 + step) / 2000) + 0.0002
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ref[k] = ref[k] * (1 - m) + v * m
            elif step == 1:
                ref[k] = ref[k]
        ema.update(model)
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, ref[k], rtol=1e-6, atol=1e-7)
    assert ema.steps == 4
    # state round trip
    ema2 = ExpMomentumEMA(model)
    ema2.load_state_dict(ema.state_dict())
    assert ema2.steps == 4


def test_ema_shared_tensor_updated_once():
    model = rtmdet.create("rtmdet-tiny", num_classes=2)
    ema = ExpMomentumEMA(model)
    ema.update(model)
    before = ema.module.bbox_head.cls_convs[0][0].conv.weight.clone()
    with torch.no_grad():
        model.bbox_head.cls_convs[0][0].conv.weight.add_(1.0)
    ema.update(model)
    m = ema.momentum_at(1)
    torch.testing.assert_close(ema.module.bbox_head.cls_convs[0][0].conv.weight, before + m)
    assert ema.module.bbox_head.cls_convs[2][0].conv is ema.module.bbox_head.cls_convs[0][0].conv


def test_ema_update_is_the_per_tensor_arithmetic_in_a_few_ops():
    """The multi-tensor update gives what a.mul_(1 - m).add_(s, alpha=m) per tensor gives, bit
    for bit, with a fixed number of tensor operations (kernel launches on a GPU) whatever the
    model's size."""
    from rtmdet.deploy.bench import OpCounter
    torch.manual_seed(0)
    model = rtmdet.create("rtmdet-tiny", num_classes=3)
    ema = ExpMomentumEMA(model)
    ema.update(model)
    by_hand = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for step in range(1, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            for b in model.buffers():
                if b.dtype.is_floating_point:
                    b.mul_(1.5)
        m = ema.momentum_at(step)
        src = model.state_dict()
        for k, v in by_hand.items():
            if v.dtype.is_floating_point:
                v.mul_(1 - m).add_(src[k], alpha=m)
        with OpCounter() as c:
            ema.update(model)
        for k, v in ema.module.state_dict().items():
            assert torch.equal(v, by_hand[k]), k
    floating = sum(t.dtype.is_floating_point for t in ema.module.state_dict().values())
    assert floating > 300 and c.kernels <= 4, (floating, c.kernels)
