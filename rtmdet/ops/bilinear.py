"""PyTorch's bilinear resize (align_corners=False), evaluated on chosen output rows and columns.

`F.interpolate` only produces whole images; instance-mask finishing needs the pixels around each
instance of a full-resolution canvas. `axis_table` is F.interpolate's per-output-index source
indices and weights, `lerp2` combines the four neighbours in the order of its vectorised CPU
kernel, with the fused multiply-adds that kernel is compiled to. F.interpolate's own results move
in the last bit with how its kernel splits the work (thread count, device); `lerp2` matches them
to float rounding (bit for bit where the kernel runs vectorised on x86) - tests/test_mask_finishing.py."""
from __future__ import annotations

from typing import NamedTuple

import torch


class AxisTable(NamedTuple):
    """Per output index along one axis: the two source indices and their weights."""
    i0: torch.Tensor  # long
    i1: torch.Tensor
    w0: torch.Tensor  # float32
    w1: torch.Tensor

    def take(self, idx: torch.Tensor) -> AxisTable:
        return AxisTable(self.i0[idx], self.i1[idx], self.w0[idx], self.w1[idx])


def index_spans(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """(K,) inclusive ranges start..end -> (K, longest) indices, each row padded by repeating
    its end (a padded position recomputes that index)."""
    steps = torch.arange(int((end - start).max()) + 1, device=start.device)
    return (start[:, None] + steps).minimum(end[:, None])


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 a * b + c with one rounding (the product of two floats is exact in float64)."""
    return torch.addcmul(c.double(), a.double(), b.double()).float()


def axis_table(in_size: int, out_size: int, scale_factor: float | None = None,
               device=None) -> AxisTable:
    """Source indices / weights of F.interpolate(mode="bilinear", align_corners=False) along one
    axis: with `scale_factor` given the kernel maps by 1/scale_factor, else by in/out (float32)."""
    if scale_factor is not None:
        ratio = torch.full((), 1.0 / scale_factor, dtype=torch.float32, device=device)  # a fill, no upload
    else:
        ratio = torch.full((), in_size, dtype=torch.float32, device=device) / out_size
    dst = torch.arange(out_size, dtype=torch.float32, device=device) + 0.5
    src = fma(ratio.expand_as(dst), dst, torch.full_like(dst, -0.5)).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    w1 = (src - i0.float()).clamp(0, 1)
    i1 = i0 + (i0 < in_size - 1).long()
    return AxisTable(i0, i1, 1 - w1, w1)


def lerp2(x: torch.Tensor, rows: AxisTable, cols: AxisTable) -> torch.Tensor:
    """Bilinear values of x (K,h,w) at per-instance output rows (K,R) and cols (K,C) -> (K,R,C).
    The tables' indices address x's own rows and columns and must be nondecreasing (as
    `axis_table`'s are). Columns are interpolated first, once per source row the output reads,
    then rows, which is also the kernel's evaluation order."""
    n_k = x.shape[0]
    first = rows.i0[:, 0]
    src = index_spans(first, rows.i1[:, -1])
    xr = x[torch.arange(n_k, device=x.device)[:, None], src]  # (K,S,w)
    shape = (n_k, src.shape[1], cols.i0.shape[1])
    b0, b1 = cols.w0[:, None, :], cols.w1[:, None, :]
    t = fma(xr.gather(2, cols.i0[:, None, :].expand(shape)), b0,
            xr.gather(2, cols.i1[:, None, :].expand(shape)) * b1)  # (K,S,C)
    shape = (n_k, rows.i0.shape[1], shape[2])
    top = t.gather(1, (rows.i0 - first[:, None])[:, :, None].expand(shape))
    bottom = t.gather(1, (rows.i1 - first[:, None])[:, :, None].expand(shape))
    return fma(top, rows.w0[:, :, None], bottom * rows.w1[:, :, None])
