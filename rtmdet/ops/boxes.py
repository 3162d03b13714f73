"""Box arithmetic: point priors, distance <-> box coding, IoU/GIoU. All boxes are xyxy."""
from __future__ import annotations

import math

import torch


def grid_priors(featmap_sizes, strides, dtype=torch.float32, device="cpu",
                with_stride: bool = False) -> list[torch.Tensor]:
    """Per level, the (H*W, 2) points (x, y) = (j*stride, i*stride), row-major (offset 0).

    Sizes may be ints or 0-dim tensors (`torch._shape_as_tensor` while tracing an export, so
    the graph keeps dynamic shapes). With `with_stride` each row is (x, y, stride, stride), as
    the training assigner and the mask head want. Loss, eager inference and export all use it."""
    out = []
    for (h, w), s in zip(featmap_sizes, strides):
        xs = (torch.arange(w, device=device) * s).to(dtype)
        ys = (torch.arange(h, device=device) * s).to(dtype)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        cols = [xx.reshape(-1), yy.reshape(-1)]
        if with_stride:
            cols += [torch.full_like(cols[0], s), torch.full_like(cols[0], s)]
        out.append(torch.stack(cols, dim=-1))
    return out


_PRIORS: dict = {}


def all_priors(featmap_sizes, strides, device, with_stride: bool = False) -> torch.Tensor:
    """`grid_priors` of every level concatenated (N,2) / (N,4), float32. Eager calls with int sizes
    get one cached tensor per (sizes, strides, device): ~6 kernels a level saved per batch (on a
    GPU the launches are what decoding costs) - callers must not write into it. Traced sizes
    (tensors) are computed every time, so the exported graph keeps dynamic shapes."""
    if any(isinstance(v, torch.Tensor) for hw in featmap_sizes for v in hw):
        return torch.cat(grid_priors(featmap_sizes, strides, torch.float32, device, with_stride))
    key = (tuple(tuple(int(v) for v in hw) for hw in featmap_sizes), tuple(strides),
           torch.device(device), with_stride)
    priors = _PRIORS.get(key)
    if priors is None:
        if len(_PRIORS) >= 16:
            _PRIORS.pop(next(iter(_PRIORS)))
        priors = _PRIORS[key] = torch.cat(grid_priors(key[0], strides, torch.float32, device, with_stride))
    return priors


def feature_sizes(maps) -> list:
    """(h, w) of each (B,C,h,w) map: ints when eager, tensors while tracing (dynamic export)."""
    if torch.jit.is_tracing():
        return [tuple(torch._shape_as_tensor(m)[2:].unbind()) for m in maps]
    return [tuple(m.shape[-2:]) for m in maps]


def level_shapes(h: int, w: int, strides) -> list[tuple[int, int]]:
    """Feature-map (h, w) per level for an (h, w) input: each stride-2 conv maps n -> ceil(n/2)."""
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def level_sizes(h: int, w: int, strides) -> list[int]:
    """Points per level for an (h, w) input."""
    return [a * b for a, b in level_shapes(h, w, strides)]


def distance2bbox(points: torch.Tensor, distance: torch.Tensor, max_shape=None) -> torch.Tensor:
    """(x - l, y - t, x + r, y + b), optionally clamped to [0, w] x [0, h] with (h, w) =
    max_shape (ints, or 0-dim tensors in a traced export). Points (N,2) broadcast over a
    leading batch dimension of `distance` (..., N, 4)."""
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    if max_shape is not None and not any(isinstance(v, torch.Tensor) for v in max_shape):
        h, w = (float(v) for v in max_shape)  # Python scalars: no host-to-device copy (CUDA graphs)
        x1, x2 = x1.clamp(0, w), x2.clamp(0, w)
        y1, y2 = y1.clamp(0, h), y2.clamp(0, h)
    elif max_shape is not None:
        h, w = (torch.as_tensor(v, dtype=distance.dtype, device=distance.device) for v in max_shape)
        x1, x2 = torch.minimum(x1.clamp(min=0), w), torch.minimum(x2.clamp(min=0), w)
        y1, y2 = torch.minimum(y1.clamp(min=0), h), torch.minimum(y2.clamp(min=0), h)
    return torch.stack([x1, y1, x2, y2], -1)


def bbox2distance(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of `distance2bbox` (no clamping): (x - x1, y - y1, x2 - x, y2 - y)."""
    return torch.stack([points[..., 0] - boxes[..., 0], points[..., 1] - boxes[..., 1],
                        boxes[..., 2] - points[..., 0], boxes[..., 3] - points[..., 1]], -1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _signed_area(boxes: torch.Tensor) -> torch.Tensor:
    # The reference IoUs do not clamp areas (an inverted predicted box keeps a positive area);
    # the assigner and GIoU loss parity depend on it. Equal to box_area for valid boxes.
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6, aligned: bool = False) -> torch.Tensor:
    """IoU of every box in `a` (..., N, 4) with every box in `b` (..., M, 4) -> (..., N, M);
    with `aligned`, pairwise along N == M -> (..., N). The reference arithmetic (mmdet
    `bbox_overlaps`): areas unclamped, union floored at `eps`."""
    if aligned:
        lt = torch.maximum(a[..., :2], b[..., :2])
        rb = torch.minimum(a[..., 2:], b[..., 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        union = _signed_area(a) + _signed_area(b) - inter
    else:
        lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
        rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        union = _signed_area(a)[..., :, None] + _signed_area(b)[..., None, :] - inter
    return inter / union.clamp(min=eps)


def box_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Generalised IoU of aligned pairs (..., 4) x (..., 4) -> (...), reference arithmetic."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (_signed_area(a) + _signed_area(b) - inter).clamp(min=eps)
    iou = inter / union
    enclose = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2]))
    enclose_area = enclose.clamp(min=0).prod(-1).clamp(min=eps)
    return iou - (enclose_area - union) / enclose_area
