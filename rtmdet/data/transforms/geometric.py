"""Geometric transforms: the image, its boxes and every per-instance target move together
(the targets through the `rtmdet.data.targets.Target` protocol)."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ..partial_resize import resize_top_left
from ..targets import FLIP_DIRECTIONS, rotation_matrix
from .sample import PAD_VAL, Sample, boxes_inside, clip_boxes, flip_boxes

__all__ = ["rescale_size", "resize_top_left", "Resize", "RandomResize", "RandomCrop", "RandomFlip",
           "RandomRotate", "Pad", "FilterAnnotations"]


def rescale_size(w: int, h: int, scale: float | tuple[int, int]) -> tuple[tuple[int, int], float]:
    """mmcv ``rescale_size``: new (w, h) and the nominal factor for a keep-ratio resize.

    A tuple ``scale`` is read as (long edge, short edge) limits, as mmcv does:
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w)); sizes round with +0.5.
    """
    if isinstance(scale, (int, float)):
        factor = float(scale)
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return (int(w * factor + 0.5), int(h * factor + 0.5)), factor


class Resize:
    """mmdet ``Resize``: keep-ratio (mmcv rescale_size) or exact resize; boxes scaled by the
    actual factors (new_w / w, new_h / h) and clipped to the new image; targets resized alike."""

    def __init__(self, scale: tuple[int, int], keep_ratio: bool = True, clip_object_border: bool = True):
        self.scale = (int(scale[0]), int(scale[1]))
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border

    def output_size(self, w: int, h: int, scale: tuple[int, int]) -> tuple[int, int]:
        """(new_w, new_h) of a ``w`` x ``h`` image resized to ``scale``."""
        if self.keep_ratio:
            (nw, nh), _ = rescale_size(w, h, scale)
        else:
            nw, nh = scale
        return max(1, nw), max(1, nh)  # the reference would crash on a 0-size resize

    def scale_boxes(self, boxes: np.ndarray, ws: float, hs: float, nw: int, nh: int) -> np.ndarray:
        """Boxes scaled by (ws, hs) into the ``nw`` x ``nh`` resized image (clipped to it)."""
        out = (boxes * np.array([ws, hs, ws, hs], np.float32)).astype(np.float32)
        if self.clip_object_border:
            clip_boxes(out, nh, nw)
        return out

    def apply(self, s: Sample, scale: tuple[int, int],
              window: tuple[int, int, int, int] | None = None) -> Sample:
        """Resize ``s`` to ``scale``. ``window`` = (x0, y0, w, h) in the resized image: only that
        part is kept (the crop that follows): the image and the targets come back cut to it
        (`resize_top_left`; a target's ``resize_window`` where it has one, else its resize then
        crop), the boxes are only scaled, as always (the crop moves them)."""
        h, w = s.img.shape[:2]
        nw, nh = self.output_size(w, h, scale)
        ws, hs = nw / w, nh / h
        if window is None:
            s.img = cv2.resize(s.img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            s.map_targets(lambda t: t.resize(ws, hs, nw, nh))
        else:
            x0, y0, cw, ch = window
            s.img = resize_top_left(s.img, (nw, nh), (x0 + cw, y0 + ch))[y0:y0 + ch, x0:x0 + cw]

            def move(t):
                if hasattr(t, "resize_window"):
                    return t.resize_window(ws, hs, nw, nh, window)
                return t.resize(ws, hs, nw, nh).crop(x0, y0, cw, ch)
            s.map_targets(move)
        s.boxes = self.scale_boxes(s.boxes, ws, hs, nw, nh)
        s.meta["scale_factor"] = (ws, hs)
        return s

    def __call__(self, s: Sample, rng: np.random.Generator | None = None) -> Sample:
        return self.apply(s, self.scale)

    def __repr__(self) -> str:
        return f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio})"


class RandomResize:
    """mmcv ``RandomResize`` with a (w, h) ``scale`` and ``ratio_range``:
    ratio = U[0,1) * (max - min) + min; target = (int(w * ratio), int(h * ratio)); then Resize."""

    def __init__(self, scale: tuple[int, int], ratio_range: tuple[float, float], keep_ratio: bool = True):
        assert ratio_range[0] <= ratio_range[1]
        self.scale = (int(scale[0]), int(scale[1]))
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.resize = Resize(self.scale, keep_ratio=keep_ratio)

    def sample_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        lo, hi = self.ratio_range
        ratio = rng.random() * (hi - lo) + lo
        return int(self.scale[0] * ratio), int(self.scale[1] * ratio)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        return self.resize.apply(s, self.sample_scale(rng))

    def fused_with(self, nxt) -> Callable | None:
        """With a RandomCrop right after (the recipe's order): one step that draws as the two do
        (the scale, then the crop offsets, which need only the resized size) and resizes only
        the top-left block the crop reaches into (`resize_top_left`; masks only the crop's
        window): the same sample, without resizing the up to 4x larger rest of the mosaic
        canvas that the crop throws away."""
        if not isinstance(nxt, RandomCrop):
            return None

        def resize_crop(s: Sample, rng: np.random.Generator) -> Sample | None:
            scale = self.sample_scale(rng)
            h, w = s.img.shape[:2]
            nw, nh = self.resize.output_size(w, h, scale)
            off_h, off_w, ch, cw = nxt.draw(nh, nw, rng)
            # which instances the crop keeps follows from the boxes alone (the same arithmetic
            # as the two steps): the others are never resized
            _, keep = nxt.crop_boxes(self.resize.scale_boxes(s.boxes, nw / w, nh / h, nw, nh),
                                     off_h, off_w, ch, cw)
            if not keep.any() and not nxt.allow_negative_crop:
                return None
            s.select(keep)
            s = self.resize.apply(s, scale, window=(off_w, off_h, cw, ch))
            return nxt.apply(s, off_h, off_w, ch, cw, cut=True)
        return resize_crop

    def __repr__(self) -> str:
        return f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, keep_ratio={self.resize.keep_ratio})"


class RandomCrop:
    """mmdet ``RandomCrop`` with crop_type 'absolute': crop (min(ch, h), min(cw, w)) at offsets
    drawn h first then w in [0, margin]; boxes translated, clipped, kept if inside; returns None
    when no box survives and ``allow_negative_crop`` is False (also for images without boxes).
    ``recompute_bbox``: then each box becomes the tight box of its target (the masks'); a sample
    without a target that can tell keeps its cropped boxes."""

    def __init__(self, crop_size: tuple[int, int], allow_negative_crop: bool = False,
                 recompute_bbox: bool = False, bbox_clip_border: bool = True):
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))  # (w, h)
        self.allow_negative_crop = allow_negative_crop
        self.recompute_bbox = recompute_bbox
        self.bbox_clip_border = bbox_clip_border

    def draw(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(off_h, off_w, crop_h, crop_w) for an ``h`` x ``w`` image: the reference's draws."""
        ch, cw = min(self.crop_size[1], h), min(self.crop_size[0], w)
        off_h = int(rng.integers(0, max(h - ch, 0) + 1))
        off_w = int(rng.integers(0, max(w - cw, 0) + 1))
        return off_h, off_w, ch, cw

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample | None:
        return self.apply(s, *self.draw(*s.img.shape[:2], rng))

    def crop_boxes(self, boxes: np.ndarray, off_h: int, off_w: int, ch: int, cw: int):
        """(the boxes in the ``ch`` x ``cw`` crop at (off_w, off_h), which of them it keeps)."""
        boxes = boxes - np.array([off_w, off_h, off_w, off_h], np.float32)
        if self.bbox_clip_border:
            clip_boxes(boxes, ch, cw)
        return boxes, boxes_inside(boxes, ch, cw)

    def apply(self, s: Sample, off_h: int, off_w: int, ch: int, cw: int, cut: bool = False) -> Sample | None:
        """Crop at the drawn offsets; ``cut``: the image and targets are cut already (a fused
        resize did it, `RandomResize.fused_with`), only the boxes move."""
        if not cut:
            s.img = s.img[off_h:off_h + ch, off_w:off_w + cw]
        boxes, valid = self.crop_boxes(s.boxes, off_h, off_w, *s.img.shape[:2])
        if not valid.any() and not self.allow_negative_crop:
            return None
        s.boxes = boxes
        s.select(valid)
        if not cut:
            s.map_targets(lambda t: t.crop(off_w, off_h, cw, ch))
        if self.recompute_bbox:
            s.recompute_boxes()
        return s

    def __repr__(self) -> str:
        return (f"RandomCrop(crop_size={self.crop_size}, allow_negative_crop={self.allow_negative_crop}, "
                f"recompute_bbox={self.recompute_bbox})")


class RandomFlip:
    """mmcv ``RandomFlip``: with one direction, flip with probability ``prob``; with several
    (RTMDet-R: horizontal, vertical, diagonal at 0.75), each with ``prob / len(direction)`` and
    no flip with ``1 - prob``. Boxes as HorizontalBoxes.flip_, targets through their ``flip``."""

    def __init__(self, prob: float = 0.5, direction: str | tuple[str, ...] = "horizontal"):
        dirs = (direction,) if isinstance(direction, str) else tuple(direction)
        bad = [d for d in dirs if d not in FLIP_DIRECTIONS]
        if bad or not dirs:
            raise ValueError(f"flip directions must be among {FLIP_DIRECTIONS}, got {direction!r}")
        if not 0 <= prob <= 1:
            raise ValueError(f"flip prob must be in [0, 1], got {prob}")
        self.prob = prob
        self.directions = dirs

    @staticmethod
    def flip(s: Sample, direction: str = "horizontal") -> Sample:
        h, w = s.img.shape[:2]
        # cv2.flip writes the flipped copy in one pass (a reversed view + ascontiguousarray is
        # several times slower); flipCode 1: around the vertical axis, 0: horizontal, -1: both
        s.img = cv2.flip(s.img, {"horizontal": 1, "vertical": 0, "diagonal": -1}[direction])
        flip_boxes(s.boxes, w, h, direction)
        s.map_targets(lambda t: t.flip(w, h, direction))
        return s

    def draw(self, rng: np.random.Generator) -> str | None:
        """mmcv draws np.random.choice(directions + [None], p=[prob / k] * k + [1 - prob]): the
        first entry whose cumulative probability exceeds one uniform draw."""
        k = len(self.directions)
        cdf = np.cumsum([self.prob / k] * k + [1 - self.prob])
        i = int(np.searchsorted(cdf / cdf[-1], rng.random(), side="right"))
        return self.directions[i] if i < k else None

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        direction = self.draw(rng)
        if direction is not None:
            s = self.flip(s, direction)
            s.meta["flip"] = True
            s.meta["flip_direction"] = direction
        return s

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob}, direction={list(self.directions)})"


class RandomRotate:
    """mmrotate ``RandomRotate`` + ``Rotate``: with probability ``prob`` turn the image by an
    angle drawn in [-angle_range, angle_range) degrees (clockwise on screen), or, when the
    sample holds a label of ``rect_obj_labels`` (objects annotated axis-aligned whatever their
    orientation: DOTA's storage tanks and roundabouts), by one of 90, 180, -90, -180.

    The image turns about ((w - 1) / 2, (h - 1) / 2), keeps its size, bilinear, border
    ``border_value`` (the reference's 0); the targets through their ``rotate``. The axis-aligned
    boxes become the targets' own (`Sample.recompute_boxes`: rotated boxes -> their hulls), or
    the hulls of the turned box corners when no target can tell; instances whose box centre
    left the image are dropped (`RotatedBoxes.is_inside`), the boxes are clipped to it."""

    HORIZONTAL_ANGLES = (90, 180, -90, -180)

    def __init__(self, prob: float = 0.5, angle_range: float = 180,
                 rect_obj_labels: tuple[int, ...] | None = None, border_value: int = 0):
        if not 0 < angle_range <= 180:
            raise ValueError(f"angle_range must be in (0, 180], got {angle_range}")
        self.prob = prob
        self.angle_range = angle_range
        self.rect_obj_labels = None if rect_obj_labels is None else tuple(int(v) for v in rect_obj_labels)
        self.border_value = border_value

    @staticmethod
    def rotate(s: Sample, angle: float, border_value: int = 0) -> Sample:
        h, w = s.img.shape[:2]
        m = rotation_matrix(angle, (w - 1) * 0.5, (h - 1) * 0.5)
        s.img = cv2.warpAffine(s.img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(border_value,) * 3)
        if len(s.boxes):  # hulls of the turned corners (about (w/2, h/2) as the boxes' reference)
            x1, y1, x2, y2 = s.boxes.T
            corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                                np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1)
            mb = rotation_matrix(angle, w * 0.5, h * 0.5)
            c = corners @ mb[:, :2].T + mb[:, 2]
            s.boxes = np.concatenate([c.min(1), c.max(1)], 1).astype(np.float32)
        s.map_targets(lambda t: t.rotate(angle, w, h))
        s.recompute_boxes()
        ctr = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
        s.select((ctr[:, 0] <= w) & (ctr[:, 1] <= h) & (ctr[:, 0] >= 0) & (ctr[:, 1] >= 0))
        clip_boxes(s.boxes, h, w)
        return s

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        # the reference's draws, in its order: rotate?, the angle, then maybe a horizontal angle
        if not rng.random() < self.prob:
            return s
        angle = self.angle_range * (2 * rng.random() - 1)
        if self.rect_obj_labels is not None and np.isin(s.labels, self.rect_obj_labels).any():
            angle = float(self.HORIZONTAL_ANGLES[int(rng.integers(len(self.HORIZONTAL_ANGLES)))])
        s = self.rotate(s, angle, self.border_value)
        s.meta["rotate"] = angle
        return s

    def __repr__(self) -> str:
        return (f"RandomRotate(prob={self.prob}, angle_range={self.angle_range}, "
                f"rect_obj_labels={self.rect_obj_labels})")


class Pad:
    """Pad bottom/right to ``size`` = (w, h) with ``pad_val`` (the targets get empty padding)."""

    def __init__(self, size: tuple[int, int], pad_val: int = PAD_VAL):
        self.size = (int(size[0]), int(size[1]))
        self.pad_val = pad_val

    def __call__(self, s: Sample, rng: np.random.Generator | None = None) -> Sample:
        tw, th = self.size
        h, w = s.img.shape[:2]
        if h > th or w > tw:
            raise ValueError(f"Pad: image {w}x{h} is larger than the pad size {tw}x{th}")
        if (h, w) != (th, tw):
            out = np.full((th, tw) + s.img.shape[2:], self.pad_val, dtype=s.img.dtype)
            out[:h, :w] = s.img
            s.img = out
            s.map_targets(lambda t: t.translate(0, 0, tw, th))
        return s

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, pad_val={self.pad_val})"


class FilterAnnotations:
    """mmdet ``FilterAnnotations`` by box: keep w > min_w and h > min_h. As in the reference,
    when *no* box passes and ``keep_empty`` is True the sample is dropped (None); an image that
    arrives with zero boxes passes through unchanged."""

    def __init__(self, min_gt_bbox_wh: tuple[float, float] = (1, 1), keep_empty: bool = True):
        self.min_gt_bbox_wh = min_gt_bbox_wh
        self.keep_empty = keep_empty

    def __call__(self, s: Sample, rng: np.random.Generator | None = None) -> Sample | None:
        if len(s.boxes) == 0:
            return s
        keep = ((s.boxes[:, 2] - s.boxes[:, 0]) > self.min_gt_bbox_wh[0]) & \
               ((s.boxes[:, 3] - s.boxes[:, 1]) > self.min_gt_bbox_wh[1])
        if not keep.any() and self.keep_empty:
            return None
        s.select(keep)
        return s

    def __repr__(self) -> str:
        return f"FilterAnnotations(min_gt_bbox_wh={self.min_gt_bbox_wh})"
