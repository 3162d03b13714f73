"""The `Sample` every transform takes and returns, `Compose`, and the box helpers they share."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..targets import Target

__all__ = ["Sample", "Compose", "PAD_VAL", "clip_boxes", "flip_boxes", "boxes_inside"]

PAD_VAL = 114


@dataclass
class Sample:
    """One training sample: image, xyxy boxes, labels, ignore (iscrowd) flags, and optional
    per-instance targets by name (``{"masks": MaskTarget}``; see `rtmdet.data.targets`)."""

    img: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray | None = None  # (n,) bool; None -> all False
    targets: dict[str, Target] = field(default_factory=dict)  # each with one entry per box
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if self.ignore is None:
            self.ignore = np.zeros(len(self.boxes), bool)
        self.ignore = np.asarray(self.ignore, bool).reshape(-1)
        self.targets = dict(self.targets)
        n = len(self.boxes)
        assert len(self.labels) == n and len(self.ignore) == n, "boxes/labels/ignore length mismatch"
        for name, t in self.targets.items():
            assert len(t) == n, f"{name}/boxes length mismatch"

    @property
    def masks(self) -> np.ndarray | None:
        """The ``"masks"`` target's array ((n, H, W) uint8 bitmaps), None without one (a shortcut
        for reading; transforms go through ``targets``)."""
        t = self.targets.get("masks")
        return None if t is None else t.as_array()

    def copy(self) -> "Sample":
        return copy.deepcopy(self)

    def select(self, keep: np.ndarray) -> None:
        """Keep only the instances where ``keep`` (bool mask or indices)."""
        self.boxes = self.boxes[keep]
        self.labels = self.labels[keep]
        self.ignore = self.ignore[keep]
        self.map_targets(lambda t: t.select(keep))

    def map_targets(self, fn: Callable[[Target], Target]) -> None:
        """Replace every target ``t`` by ``fn(t)`` (how a transform moves them with the image)."""
        self.targets = {name: fn(t) for name, t in self.targets.items()}

    def target_like(self, name: str, like: Target) -> Target:
        """This sample's target ``name``, or, if it has none, a blank one of ``like``'s kind with
        an entry per box (for a sample mixed into one that has the target)."""
        if name in self.targets:
            return self.targets[name]
        h, w = self.img.shape[:2]
        return like.blank(len(self.boxes), w, h)

    def recompute_boxes(self) -> None:
        """Boxes from the first target that can tell them (masks: each mask's tight box); the
        boxes stay as they are when no target can."""
        for t in self.targets.values():
            boxes = t.boxes()
            if boxes is not None:
                self.boxes = boxes
                return


def clip_boxes(boxes: np.ndarray, h: int, w: int) -> None:
    """HorizontalBoxes.clip_: x into [0, w], y into [0, h] (in place)."""
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)


def flip_boxes(boxes: np.ndarray, w: int, h: int = 0, direction: str = "horizontal") -> None:
    """Flip in a ``w`` x ``h`` image (in place), as HorizontalBoxes.flip_: horizontal
    x1' = w - x2, x2' = w - x1; vertical the same in y with ``h``; diagonal both."""
    if direction in ("horizontal", "diagonal"):
        x1 = boxes[:, 0].copy()
        boxes[:, 0] = w - boxes[:, 2]
        boxes[:, 2] = w - x1
    if direction in ("vertical", "diagonal"):
        y1 = boxes[:, 1].copy()
        boxes[:, 1] = h - boxes[:, 3]
        boxes[:, 3] = h - y1


def boxes_inside(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """HorizontalBoxes.is_inside (partial): x1 < w, y1 < h, x2 > 0, y2 > 0."""
    return (boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


class Compose:
    """Apply transforms in order; stop with None as soon as one returns None.

    A transform with a ``fused_with(next)`` method may run together with the one after it as
    one step that returns the same sample for the same draws, cheaper (RandomResize + RandomCrop:
    only the pixels the crop keeps are resized); `steps` lists what runs."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def steps(self) -> list[tuple[str, Callable]]:
        """(name, callable) of each step: the transforms, adjacent fusable pairs as one."""
        out, ts, i = [], self.transforms, 0
        while i < len(ts):
            fuse = getattr(ts[i], "fused_with", None)
            fused = fuse(ts[i + 1]) if fuse is not None and i + 1 < len(ts) else None
            if fused is not None:
                out.append((f"{type(ts[i]).__name__}+{type(ts[i + 1]).__name__}", fused))
                i += 2
            else:
                out.append((type(ts[i]).__name__, ts[i]))
                i += 1
        return out

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | None:
        for _, step in self.steps():
            sample = step(sample, rng)
            if sample is None:
                return None
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"
