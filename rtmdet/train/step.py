"""The parts of one training step that the Trainer, its speed probe and benchmarks/bench_train.py
share, so the benchmark measures the code that trains: the batch onto the device (uint8 -> float
there, channels-last on request), the forward under autocast, the family's loss, and the
GradScaler-aware backward + optimizer step."""
from __future__ import annotations

from typing import Callable

import torch

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def float_outputs(out) -> tuple:
    """Head outputs in float32 (after autocast): lists stay lists, a tensor stays a tensor."""
    return tuple([t.float() for t in o] if isinstance(o, (list, tuple)) else o.float() for o in out)


def autocast_dtype(amp: bool, amp_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run, None for float32. CUDA: `amp_dtype` when `amp`. CPU: only
    bfloat16 (asked for explicitly: CPU float16 autocast covers few ops and is slow)."""
    if not amp:
        return None
    if device.type == "cuda" or (device.type == "cpu" and amp_dtype == "bfloat16"):
        return AMP_DTYPES[amp_dtype]
    return None


def device_images(model: torch.nn.Module, imgs: torch.Tensor, device: torch.device,
                  channels_last: bool) -> torch.Tensor:
    """The collated uint8 batch (a channels-last view) on `device`, laid out as the network
    wants it (the copy happens there), normalised to float."""
    imgs = imgs.to(device, non_blocking=True)
    imgs = imgs.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return model.normalize(imgs)


def forward_loss(net: torch.nn.Module, model: torch.nn.Module, family, batch: dict,
                 device: torch.device, dtype: torch.dtype | None = None, channels_last: bool = False,
                 mark: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """The loss parts of `batch`: `net` (the model, or its DDP / compiled wrapper) under autocast
    to `dtype` (None: float32), the head outputs back in float32, then `family.loss`.
    `mark(name)` is called after "forward" and "loss" (the benchmark times the parts)."""
    imgs = device_images(model, batch["imgs"], device, channels_last)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(imgs)
    out = float_outputs(out)
    if mark:
        mark("forward")
    parts = family.loss(out, batch, tuple(imgs.shape[-2:]), model.cfg, device)
    if mark:
        mark("loss")
    return parts


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler) -> None:
    """Backward and one optimizer step through `scaler` (a no-op wrapper when disabled: float32
    and bfloat16 need no loss scaling), then clear the gradients."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def grad_scaler(dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for float16 only (bfloat16 has float32's range)."""
    return torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
