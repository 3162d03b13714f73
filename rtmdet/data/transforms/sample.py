"""The `Sample` every transform takes and returns, `Compose`, and the box helpers they share."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["Sample", "Compose", "PAD_VAL", "clip_boxes", "boxes_inside"]

PAD_VAL = 114


@dataclass
class Sample:
    """One training sample: image, xyxy boxes, labels, ignore (iscrowd) flags, optional masks."""

    img: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray | None = None  # (n,) bool; None -> all False
    masks: np.ndarray | None = None  # (n, H, W) uint8
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if self.ignore is None:
            self.ignore = np.zeros(len(self.boxes), bool)
        self.ignore = np.asarray(self.ignore, bool).reshape(-1)
        if self.masks is not None:
            self.masks = np.asarray(self.masks, np.uint8)
        n = len(self.boxes)
        assert len(self.labels) == n and len(self.ignore) == n, "boxes/labels/ignore length mismatch"
        assert self.masks is None or len(self.masks) == n, "masks/boxes length mismatch"

    def copy(self) -> "Sample":
        return copy.deepcopy(self)

    def select(self, keep: np.ndarray) -> None:
        """Keep only the instances where ``keep`` (bool mask or indices)."""
        self.boxes = self.boxes[keep]
        self.labels = self.labels[keep]
        self.ignore = self.ignore[keep]
        if self.masks is not None:
            self.masks = self.masks[keep]


def clip_boxes(boxes: np.ndarray, h: int, w: int) -> None:
    """HorizontalBoxes.clip_: x into [0, w], y into [0, h] (in place)."""
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)


def boxes_inside(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """HorizontalBoxes.is_inside (partial): x1 < w, y1 < h, x2 > 0, y2 > 0."""
    return (boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


class Compose:
    """Apply transforms in order; stop with None as soon as one returns None."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | None:
        for t in self.transforms:
            sample = t(sample, rng)
            if sample is None:
                return None
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"
