"""Test-time pre-processing exactly as the reference: keep-ratio resize to fit, pad with 114."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ImageMeta:
    """Where one image went on its way into the network, to map detections back."""

    ori_shape: tuple[int, int]  # (h, w) of the original image
    scale_factor: tuple[float, float]  # (w, h) ratios new/old of the keep-ratio resize
    img_shape: tuple[int, int]  # (h, w) of the padded input (what decoded boxes are clamped to)


def fit_size(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """(new_h, new_w) after scaling by min(size_h / h, size_w / w), rounded half up as mmcv does
    (for a square target this is the reference's long/short-edge rule). A side that would round
    to 0 pixels is kept at 1 (the reference would fail inside cv2.resize)."""
    th, tw = size
    scale = min(th / h, tw / w)
    return (max(1, min(th, int(h * scale + 0.5))), max(1, min(tw, int(w * scale + 0.5))))


def letterbox(img: np.ndarray, size: tuple[int, int] = (640, 640), pad_val: int = 114):
    """Resize keeping the aspect ratio (OpenCV bilinear), then pad bottom/right to `size`.

    Returns (padded image, (w_scale, h_scale), (new_h, new_w)); the scales are the actual
    per-axis ratios new/old, which is what boxes are divided by afterwards."""
    h, w = img.shape[:2]
    nh, nw = fit_size(h, w, size)
    if (nh, nw) != (h, w):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    th, tw = size
    if (nh, nw) != (th, tw):
        img = cv2.copyMakeBorder(img, 0, max(th - nh, 0), 0, max(tw - nw, 0),
                                 cv2.BORDER_CONSTANT, value=(pad_val,) * 3)
    return img, (nw / w, nh / h), (nh, nw)


def letterbox_batch(images: list[np.ndarray], size: tuple[int, int], out: np.ndarray | None = None,
                    pad_val: int = 114):
    """Letterbox every BGR image to `size`: a (B,3,H,W) uint8 array and an `ImageMeta` each.

    Each resized image is split into the batch's channel planes in place (OpenCV's SIMD
    de-interleave): stacking the HWC images and transposing the stack costs 5x as much. Where
    the image fills whole rows (landscape, the usual photo or video frame) it goes straight into
    the planes' top rows and only the rows below are filled, with no padded copy in between.
    `out`: a (B,3,H,W) uint8 array to write into (a pinned buffer, `rtmdet.inference.pinned`)."""
    metas = []
    if out is not None and out.shape != (len(images), 3, *size):
        raise ValueError(f"out has shape {out.shape}, not {(len(images), 3, *size)}")
    th, tw = size
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {i}: expected an HxWx3 BGR array, got shape {img.shape}")
        h, w = img.shape[:2]
        nh, nw = fit_size(h, w, size)
        if out is None:
            out = np.empty((len(images), 3, th, tw), dtype=img.dtype)
        if nw == tw:  # whole rows: the top nh rows of each plane are contiguous
            if (nh, nw) != (h, w):
                img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            _split_into(img, [plane[:nh] for plane in out[i]])
            out[i, :, nh:] = pad_val
        else:  # a strided destination is slower to split into than the padded copy
            _split_into(letterbox(img, size, pad_val)[0], list(out[i]))
        metas.append(ImageMeta((h, w), (nw / w, nh / h), tuple(size)))
    if out is None:
        out = np.empty((0, 3, *size), dtype=np.uint8)
    return out, metas


def _split_into(img: np.ndarray, planes: list[np.ndarray]) -> None:
    """De-interleave an (h,w,3) image into three (h,w) arrays (OpenCV writes in place where it
    can; otherwise its result is copied over)."""
    for dst, src in zip(planes, cv2.split(img, planes)):
        if src.ctypes.data != dst.ctypes.data:
            np.copyto(dst, src)


def stack_by_shape(images: list[np.ndarray], size: tuple[int, int], out: np.ndarray | None = None):
    """The host half of `letterbox_batch_torch`: the images grouped by shape, each group one
    (n,H,W,3) uint8 array (a view for a group of one), and an `ImageMeta` each. Runs where the
    next batch is read ahead, off the thread that drives the GPU. `out`: a flat uint8 array of
    at least the images' total size to stack every group into (a pinned buffer)."""
    metas, groups = [], {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[:2]), []).append(i)
        nh, nw = fit_size(*img.shape[:2], size)
        metas.append(ImageMeta(tuple(img.shape[:2]), (nw / img.shape[1], nh / img.shape[0]), tuple(size)))
    if out is not None:
        stacked, start = [], 0
        for idx in groups.values():
            shape = (len(idx), *images[idx[0]].shape)
            n = int(np.prod(shape))
            stacked.append((idx, np.stack([images[i] for i in idx], out=out[start:start + n].reshape(shape))))
            start += n
        return stacked, metas
    stacked = []
    for idx in groups.values():
        one = images[idx[0]]
        # torch.from_numpy takes no negative strides and warns on read-only arrays
        view = len(idx) == 1 and one.flags.c_contiguous and one.flags.writeable
        stacked.append((idx, one[None] if view else np.stack([images[i] for i in idx])))
    return stacked, metas


def letterbox_stacked_torch(stacked, count: int, size: tuple[int, int], device, pad_val: int = 114):
    """The device half of `letterbox_batch_torch`: `stack_by_shape`'s groups -> the (count,3,H,W)
    uint8 batch on `device`."""
    import torch
    import torch.nn.functional as F

    from ..ops.upload import rows_index

    th, tw = size
    out = torch.full((count, 3, th, tw), pad_val, dtype=torch.uint8, device=device)
    for idx, host in stacked:
        h, w = host.shape[1:3]
        # asynchronous when `host` lies in a pinned buffer (`stack_by_shape(out=...)`)
        x = torch.from_numpy(host).to(device, non_blocking=True).permute(0, 3, 1, 2)
        nh, nw = fit_size(h, w, size)
        if (nh, nw) != (h, w):
            x = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", align_corners=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        out[rows_index(idx, device), :, :nh, :nw] = x
    return out


def letterbox_batch_torch(images: list[np.ndarray], size: tuple[int, int], device,
                          pad_val: int = 114):
    """`letterbox_batch` on `device` (the GPU): each uint8 image is uploaded once, resized
    bilinearly there (half-pixel centres, no antialias: OpenCV's INTER_LINEAR sampling grid) and
    rounded back to whole grey levels, then padded into one (B,3,H,W) uint8 tensor.

    Not bit-exact with OpenCV, whose uint8 resize uses 11-bit fixed-point weights: a pixel may
    differ by one grey level (docs/speed.md measures what that does to detections). Images with
    the same shape are stacked on the host and resized in one call."""
    stacked, metas = stack_by_shape(images, size)
    return letterbox_stacked_torch(stacked, len(images), size, device, pad_val), metas
