"""Per-instance targets that travel with a sample's boxes through the transforms.

A :class:`~rtmdet.data.transforms.Sample` holds its axis-aligned ``boxes`` and, in
``sample.targets``, any number of per-instance targets by name: ``"masks"`` (:class:`MaskTarget`,
bitmap masks) today, rotated boxes for a rotated-box model. Every target implements the
:class:`Target` protocol, and the transforms only ever call that protocol: they move the boxes
and ask each target to make the same move, never which task it serves. A new kind of target is
one new class (plus a loader in :data:`TARGET_LOADERS`), not a branch in every transform.

Targets are values: each method returns a new target (which may share memory with the old one;
nothing writes into a target's arrays).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from ..ops.masks import rle_decode
from .records import ImageRecord

__all__ = ["Target", "MaskTarget", "TargetLoader", "TARGET_LOADERS", "resize_masks", "masks_to_boxes",
           "record_masks", "decode_rle"]


class Target(Protocol):
    """What a transform may ask of a per-instance target (one entry per box, in box order).

    Sizes are in pixels of the image the target belongs to *after* the operation.
    """

    def __len__(self) -> int:
        """The number of instances."""

    def select(self, keep: np.ndarray) -> "Target":
        """The instances where ``keep`` (a bool mask or indices), in that order."""

    def resize(self, sx: float, sy: float, width: int, height: int) -> "Target":
        """The image was rescaled: by ``(sx, sy)`` (the factors applied to the boxes) to
        ``width`` x ``height`` pixels."""

    def flip(self, width: int) -> "Target":
        """The image, ``width`` pixels wide, was flipped horizontally (x -> width - x)."""

    def translate(self, dx: int, dy: int, width: int, height: int) -> "Target":
        """The image content moved by ``(dx, dy)`` onto a new ``width`` x ``height`` image; what
        falls outside it is cut off. A crop at (x0, y0) is ``translate(-x0, -y0, w, h)``, padding
        at the bottom/right is ``translate(0, 0, w, h)``, a Mosaic tile is placed with it."""

    def blank(self, n: int, width: int, height: int) -> "Target":
        """``n`` instances of this kind that carry nothing, on a ``width`` x ``height`` image:
        what an image lacking the target contributes when it is mixed into one that has it."""

    @classmethod
    def concat(cls, parts: Sequence["Target"]) -> "Target":
        """The instances of ``parts`` one after the other (all on images of the same size)."""

    def boxes(self) -> np.ndarray | None:
        """(n, 4) float32 xyxy: the tight axis-aligned box of each instance, or None when this
        kind cannot tell (used by ``RandomCrop(recompute_bbox=True)``)."""

    def as_array(self) -> np.ndarray:
        """The contiguous array the data loader returns for this target."""


# ----------------------------------------------------------------------------- bitmap masks
def resize_masks(masks: np.ndarray, w: int, h: int) -> np.ndarray:
    """(n, H, W) masks to (n, h, w), nearest neighbour."""
    if len(masks) == 0:
        return np.zeros((0, h, w), np.uint8)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks])


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """HorizontalBoxes.from_instance_masks: [x_min, y_min, x_max + 1, y_max + 1], zeros if empty."""
    boxes = np.zeros((len(masks), 4), np.float32)
    x_any = masks.any(axis=1)
    y_any = masks.any(axis=2)
    for i in range(len(masks)):
        xs, ys = np.flatnonzero(x_any[i]), np.flatnonzero(y_any[i])
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def decode_rle(rle: dict) -> np.ndarray:
    """A COCO RLE dict (``size`` = [h, w], ``counts`` list or compressed string) -> HxW uint8."""
    return rle_decode(rle).astype(np.uint8)


def record_masks(rec: ImageRecord, h: int, w: int) -> np.ndarray:
    """Bitmap masks (n, h, w) uint8 for a record's segmentations (polygons filled with cv2)."""
    segs = rec.segmentations or []
    masks = np.zeros((len(rec.boxes), h, w), np.uint8)
    for i, seg in enumerate(segs):
        if seg is None:
            continue
        if isinstance(seg, dict):
            m = decode_rle(seg)
            if m.shape != (h, w):
                m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
            masks[i] = m
        else:
            polys = [np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32)
                     for p in seg if len(p) >= 6]
            if polys:
                cv2.fillPoly(masks[i], polys, 1)
    return masks


class MaskTarget:
    """Bitmap instance masks ``(n, H, W) uint8`` on the sample's image grid. Geometry is applied
    exactly as to the image (nearest-neighbour resize, zero fill where the image gets padding);
    the reference RTMDet-Ins configs use polygon masks, we use bitmaps."""

    def __init__(self, data: np.ndarray):
        self.data = np.asarray(data, np.uint8)

    @classmethod
    def from_record(cls, rec: ImageRecord, h: int, w: int) -> "MaskTarget":
        return cls(record_masks(rec, h, w))

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"MaskTarget({self.data.shape})"

    def select(self, keep: np.ndarray) -> "MaskTarget":
        return MaskTarget(self.data[keep])

    def resize(self, sx: float, sy: float, width: int, height: int) -> "MaskTarget":
        return MaskTarget(resize_masks(self.data, width, height))

    def flip(self, width: int) -> "MaskTarget":
        return MaskTarget(np.ascontiguousarray(self.data[:, :, ::-1]))

    def translate(self, dx: int, dy: int, width: int, height: int) -> "MaskTarget":
        n, h, w = self.data.shape
        if dx <= 0 and dy <= 0 and w + dx >= width and h + dy >= height:  # a window inside: a view
            return MaskTarget(self.data[:, -dy:-dy + height, -dx:-dx + width])
        out = np.zeros((n, height, width), np.uint8)
        x0, x1 = max(0, -dx), min(w, width - dx)  # the source columns / rows that land inside
        y0, y1 = max(0, -dy), min(h, height - dy)
        if x1 > x0 and y1 > y0:
            out[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx] = self.data[:, y0:y1, x0:x1]
        return MaskTarget(out)

    def blank(self, n: int, width: int, height: int) -> "MaskTarget":
        return MaskTarget(np.zeros((n, height, width), np.uint8))

    @classmethod
    def concat(cls, parts: Sequence["MaskTarget"]) -> "MaskTarget":
        return cls(np.concatenate([p.data for p in parts]))

    def boxes(self) -> np.ndarray:
        return masks_to_boxes(self.data)

    def as_array(self) -> np.ndarray:
        return np.ascontiguousarray(self.data)


# ----------------------------------------------------------------------------- loading
TargetLoader = Callable[[ImageRecord, int, int], Target]  # (record, image height, image width) -> target

# What `TrainDataset(targets=("masks", ...))` loads for each name.
TARGET_LOADERS: dict[str, TargetLoader] = {
    "masks": MaskTarget.from_record,
}
