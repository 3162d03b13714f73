"""Optimizer and learning-rate schedule of the RTMDet recipe.

* AdamW, lr 0.004 for a total batch of 256 (8 GPUs x 32), scaled linearly to the actual total
  batch; weight decay 0.05 except on normalisation layers and biases (`norm_decay_mult=0,
  bias_decay_mult=0`); a parameter shared by several modules is counted once.
* LinearLR warm-up over the first `warmup_iters` iterations from factor 1e-5 to 1, then flat
  (the trainer shortens it for short runs: `warmup_steps`);
  from epoch `epochs // 2` a cosine down to `min_lr_ratio * lr` at the last iteration
  (CosineAnnealingLR by epoch, converted to iterations: begin/end/T_max x iters per epoch).
  The factor of iteration `i` (0-based) is the one in force while iteration i runs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

BASE_LR = 0.004
BASE_BATCH = 256

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def scaled_lr(total_batch: int, base_lr: float = BASE_LR, base_batch: int = BASE_BATCH) -> float:
    return base_lr * total_batch / base_batch


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and norm-layer parameters + biases without decay."""
    decay, no_decay, seen = [], [], set()
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORMS) or name == "bias":
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                    betas=(0.9, 0.999), eps: float = 1e-8, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `param_groups`. `fused` None: the fused CUDA kernel (one launch for all
    parameters instead of a few per tensor) when every parameter is on CUDA, torch's default
    (foreach) otherwise, e.g. on the CPU."""
    groups = param_groups(model, weight_decay)
    if fused is None:
        params = [p for g in groups for p in g["params"]]
        fused = bool(params) and all(p.is_cuda for p in params)
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **extra)


def warmup_steps(total: int, warmup_iters: int = 1000, ratio: float = 0.1,
                 min_iters: int = 10) -> int:
    """Warm-up length for a run of `total` optimizer steps: the reference's `warmup_iters` for a
    long run, `ratio` of the run (at least `min_iters`, at most half of it) for a short one, so
    a few-epoch fine-tune leaves warm-up (as ultralytics' warm-up epochs with a minimum)."""
    return int(max(0, min(warmup_iters, max(min_iters, round(ratio * total)), total // 2)))


def lr_factor(it: int, iters_per_epoch: int, epochs: int, warmup_iters: int = 1000,
              warmup_start: float = 1e-5, min_lr_ratio: float = 0.05) -> float:
    """Multiplier of the base lr at (0-based) iteration `it`."""
    f = 1.0
    if warmup_iters > 0 and it < warmup_iters:
        f *= warmup_start + (1.0 - warmup_start) * it / warmup_iters
    begin = (epochs // 2) * iters_per_epoch
    t_max = (epochs - epochs // 2) * iters_per_epoch
    if t_max > 0 and it >= begin:
        t = min(it - begin, t_max)
        f *= min_lr_ratio + (1.0 - min_lr_ratio) * (1 + math.cos(math.pi * t / t_max)) / 2
    return f


class RTMDetLRScheduler:
    """Sets each group's lr to `initial_lr * lr_factor(iteration)`; `step()` after every
    optimizer step. Its state is just the iteration counter."""

    def __init__(self, optimizer: torch.optim.Optimizer, iters_per_epoch: int, epochs: int,
                 warmup_iters: int = 1000, warmup_start: float = 1e-5, min_lr_ratio: float = 0.05):
        self.optimizer = optimizer
        self.kw = dict(iters_per_epoch=iters_per_epoch, epochs=epochs, warmup_iters=warmup_iters,
                       warmup_start=warmup_start, min_lr_ratio=min_lr_ratio)
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.iteration = 0
        self._apply()

    def factor(self, it: int | None = None) -> float:
        return lr_factor(self.iteration if it is None else it, **self.kw)

    def _apply(self) -> None:
        f = self.factor()
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def step(self) -> None:
        self.iteration += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, **self.kw}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self._apply()
