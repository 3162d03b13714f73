"""ExpMomentumEMA (YOLOX/RTMDet): an exponential moving average of the weights whose momentum
starts large and decays to `momentum`: m(step) = (1 - momentum) * exp(-(1 + step) / gamma) +
momentum; `avg = (1 - m) * avg + m * source`. The first update copies the model. With
`update_buffers` the floating buffers (BN running stats) are averaged too; integer buffers
(`num_batches_tracked`) keep the value of the first copy, as in the reference.

One deliberate difference: a tensor shared by several modules (RTMDet's shared head convs) is
averaged once per step. The reference walks `state_dict()` and so updates such a tensor once per
name (three times a step for the head convs)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class ExpMomentumEMA:
    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: float = 2000,
                 update_buffers: bool = True):
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        self.momentum, self.gamma, self.update_buffers = momentum, gamma, update_buffers
        self.steps = 0

    def momentum_at(self, steps: int) -> float:
        return (1 - self.momentum) * math.exp(-float(1 + steps) / self.gamma) + self.momentum

    def _pairs(self, model: nn.Module):
        src = unwrap(model).state_dict() if self.update_buffers else dict(unwrap(model).named_parameters())
        avg = self.module.state_dict() if self.update_buffers else dict(self.module.named_parameters())
        seen = set()
        for k, a in avg.items():
            if a.data_ptr() in seen:
                continue
            seen.add(a.data_ptr())
            yield a, src[k]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self.steps == 0:
            for a, s in self._pairs(model):
                a.copy_(s)
        else:
            m = self.momentum_at(self.steps)
            avg, src = [], []
            for a, s in self._pairs(model):
                if a.dtype.is_floating_point:
                    avg.append(a)
                    src.append(s.to(a.device, a.dtype))
            # each tensor's a * (1 - m) + m * s, as a.mul_(1 - m).add_(s, alpha=m) would, for all
            # tensors in a few multi-tensor kernels on GPUs (two launches per tensor otherwise:
            # ~700 a step for tiny)
            torch._foreach_mul_(avg, 1 - m)
            torch._foreach_add_(avg, src, alpha=m)
        if not self.update_buffers:
            for b_avg, b_src in zip(self.module.buffers(), unwrap(model).buffers()):
                b_avg.copy_(b_src)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
