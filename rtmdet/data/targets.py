"""Per-instance targets that travel with a sample's boxes through the transforms.

A :class:`~rtmdet.data.transforms.Sample` holds its axis-aligned ``boxes`` and, in
``sample.targets``, any number of per-instance targets by name: ``"masks"`` for instance
segmentation (`rtmdet.data.polygon_masks.PolygonTarget`, polygons as the reference moves them,
or :class:`MaskTarget`, bitmaps, for datasets with RLE masks), ``"rboxes"`` (:class:`RBoxTarget`, (cx, cy, w, h,
theta) rotated boxes) for a rotated-box model. Every target implements the
:class:`Target` protocol, and the transforms only ever call that protocol: they move the boxes
and ask each target to make the same move, never which task it serves. A new kind of target is
one new class (plus a loader in `rtmdet.data.target_loaders`), not a branch in every transform.

Targets are values: each method returns a new target (which may share memory with the old one;
nothing writes into a target's arrays).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import cv2
import numpy as np

from ..ops.masks import rle_decode
from ..ops.polygons import poly2obb_le90
from .records import ImageRecord

__all__ = ["Target", "MaskTarget", "RBoxTarget", "FLIP_DIRECTIONS", "selected_indices", "common_size",
           "nearest_index", "place_targets", "record_masks", "record_rboxes", "decode_rle", "rotation_matrix"]

FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")


def rotation_matrix(angle: float, cx: float, cy: float) -> np.ndarray:
    """(2, 3) float64 affine map turning the image ``angle`` degrees clockwise on screen about
    (cx, cy): ``cv2.getRotationMatrix2D((cx, cy), -angle, 1)``, as mmcv's ``imrotate`` and
    mmrotate's ``RotatedBoxes.rotate_`` build it."""
    return cv2.getRotationMatrix2D((float(cx), float(cy)), -float(angle), 1.0)


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

    def flip(self, width: int, height: int, direction: str = "horizontal") -> "Target":
        """The ``width`` x ``height`` image was flipped: ``"horizontal"`` (x -> width - x),
        ``"vertical"`` (y -> height - y) or ``"diagonal"`` (both)."""

    def rotate(self, angle: float, width: int, height: int) -> "Target":
        """The ``width`` x ``height`` image was turned ``angle`` degrees clockwise on screen about
        its centre, keeping its size (mmrotate ``Rotate``); what leaves the image is cut off.
        Removing instances that left it is the transform's business (``select``)."""

    def translate(self, dx: int, dy: int, width: int, height: int) -> "Target":
        """The image content moved by ``(dx, dy)`` onto a new ``width`` x ``height`` image; what
        falls outside it is cut off. A crop at (x0, y0) is ``translate(-x0, -y0, w, h)``, padding
        at the bottom/right is ``translate(0, 0, w, h)``, a Mosaic tile is placed with it."""

    def crop(self, x0: int, y0: int, width: int, height: int) -> "Target":
        """The image was cut to the ``width`` x ``height`` block at (x0, y0) (RandomCrop). For
        pixels that is ``translate(-x0, -y0, width, height)``; polygons are cut at the block's
        edges instead (`PolygonTarget`)."""

    def blank(self, n: int, width: int, height: int) -> "Target":
        """``n`` instances of this kind that carry nothing, on a ``width`` x ``height`` image:
        what an image lacking the target contributes when it is mixed into one that has it."""

    @classmethod
    def concat(cls, parts: Sequence["Target"]) -> "Target":
        """The instances of ``parts`` one after the other (all on images of the same size)."""

    # optional: ``resize_window(sx, sy, width, height, window)``: `resize`, then a crop to
    # ``window`` = (x0, y0, w, h), computing just that window (MaskTarget); without it `Resize`
    # resizes and crops

    def boxes(self) -> np.ndarray | None:
        """(n, 4) float32 xyxy: the tight axis-aligned box of each instance, or None when this
        kind cannot tell (used by ``RandomCrop(recompute_bbox=True)``)."""

    def as_array(self) -> np.ndarray:
        """The contiguous array the data loader returns for this target (mask targets also take
        ``step``: only the pixels of every step-th row and column, what a loss reads)."""


def selected_indices(keep: np.ndarray, n: int) -> np.ndarray | None:
    """``keep`` (a bool mask or indices over ``n`` instances) as indices; None when it keeps
    every instance in order as a bool mask (a target can then return itself)."""
    keep = np.asarray(keep)
    if keep.dtype == bool:
        return None if len(keep) == n and keep.all() else np.flatnonzero(keep)
    return keep


def common_size(parts: Sequence) -> tuple[int, int]:
    """The (width, height) every mask target of ``parts`` is on (concatenating masks of two
    image sizes is a bug in the caller)."""
    sizes = {(p.width, p.height) for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"cannot concatenate masks of different image sizes: {sorted(sizes)}")
    return next(iter(sizes))


def place_targets(cls, parts: Sequence[tuple["Target", int, int]], width: int, height: int) -> "Target":
    """The instances of each ``(target, dx, dy)`` part, moved by (dx, dy) onto one ``width`` x
    ``height`` image (Mosaic's tiles): ``cls.concat`` of the translated parts."""
    return cls.concat([t.translate(dx, dy, width, height) for t, dx, dy in parts])


def _overlap(w: int, h: int, dx: int, dy: int, width: int, height: int):
    """(source, destination) slices (rows, columns) of a ``w`` x ``h`` image moved by (dx, dy)
    onto a ``width`` x ``height`` one; None when nothing lands inside."""
    x0, x1 = max(0, -dx), min(w, width - dx)
    y0, y1 = max(0, -dy), min(h, height - dy)
    if x1 <= x0 or y1 <= y0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx))


# ----------------------------------------------------------------------------- bitmap masks
def nearest_index(n_out: int, n_in: int, start: int = 0, count: int | None = None) -> np.ndarray:
    """The source index of output pixels ``start .. start + count`` of an ``n_in`` -> ``n_out``
    nearest-neighbour resize as OpenCV's INTER_NEAREST computes it: floor(x * (1 / (n_out /
    n_in))) in doubles, clamped to the last source pixel."""
    count = n_out - start if count is None else count
    x = np.arange(start, start + count, dtype=np.float64) * (1.0 / (n_out / n_in))
    return np.minimum(np.floor(x).astype(np.intp), n_in - 1)


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


class ArrayTarget:
    """A target held as one array whose first axis runs over the instances."""

    data: np.ndarray

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({tuple(self.data.shape)})"

    def select(self, keep: np.ndarray):
        idx = selected_indices(keep, len(self.data))
        return self if idx is None else type(self)(self.data[idx])  # keeping every instance: no copy


class MaskTarget:
    """Instance masks on the sample's image grid (``width`` x ``height``), each held as the block
    of it that may be nonzero (its crop) and that block's top-left corner: an instance covers a
    small part of a mosaic canvas, and moving only that part is what makes the RandomResize /
    RandomCrop / Mosaic / MixUp steps cheap for RTMDet-Ins. Geometry is applied exactly as to the
    image (nearest-neighbour resize with OpenCV's indices, zero fill where the image gets padding):
    ``as_array()`` equals the same steps on full ``(n, H, W)`` bitmaps (tests/test_targets.py
    checks against such a dense oracle). The reference RTMDet-Ins configs use polygon masks, and
    so do we (`rtmdet.data.polygon_masks`); bitmaps serve datasets whose masks are RLE."""

    def __init__(self, data: np.ndarray):
        """From full bitmaps ``(n, H, W)``: each cut to its nonzero rows and columns."""
        data = np.asarray(data, np.uint8)
        n, h, w = data.shape
        rows, cols = data.any(axis=2), data.any(axis=1)
        crops, corners = [], []
        for i in range(n):
            ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
            if len(ys):
                crops.append(data[i, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1].copy())
                corners.append((int(xs[0]), int(ys[0])))
            else:
                crops.append(_EMPTY)
                corners.append((0, 0))
        self._set(crops, corners, w, h)

    def _set(self, crops: list, corners: list, width: int, height: int) -> "MaskTarget":
        self.crops, self.corners, self.width, self.height = crops, corners, int(width), int(height)
        return self

    @classmethod
    def _of(cls, crops: list, corners: list, width: int, height: int) -> "MaskTarget":
        return cls.__new__(cls)._set(crops, corners, width, height)

    @classmethod
    def from_record(cls, rec: ImageRecord, h: int, w: int) -> "MaskTarget":
        return cls(record_masks(rec, h, w))

    def __len__(self) -> int:
        return len(self.crops)

    def __repr__(self) -> str:
        return f"MaskTarget({len(self)} masks on {self.width}x{self.height})"

    def select(self, keep: np.ndarray) -> "MaskTarget":
        keep = selected_indices(keep, len(self))
        if keep is None:
            return self
        return MaskTarget._of([self.crops[i] for i in keep], [self.corners[i] for i in keep],
                              self.width, self.height)

    def _gathered(self, rows: np.ndarray, cols: np.ndarray, width: int, height: int) -> "MaskTarget":
        """Output pixel (y, x) of a ``width`` x ``height`` image reads source (rows[y], cols[x])
        (a nearest-neighbour resize, maybe of a window): each crop becomes the output rows and
        columns that read it (a contiguous range: the indices never decrease)."""
        crops, corners = [], []
        for crop, (x, y) in zip(self.crops, self.corners):
            h, w = crop.shape
            r0, r1 = np.searchsorted(rows, (y, y + h))
            c0, c1 = np.searchsorted(cols, (x, x + w))
            if r1 > r0 and c1 > c0:
                crops.append(crop[np.ix_(rows[r0:r1] - y, cols[c0:c1] - x)])
                corners.append((int(c0), int(r0)))
            else:
                crops.append(_EMPTY)
                corners.append((0, 0))
        return MaskTarget._of(crops, corners, width, height)

    def resize(self, sx: float, sy: float, width: int, height: int) -> "MaskTarget":
        if (width, height) == (self.width, self.height):
            return self
        return self._gathered(nearest_index(height, self.height), nearest_index(width, self.width),
                              width, height)

    def resize_window(self, sx: float, sy: float, width: int, height: int,
                      window: tuple[int, int, int, int]) -> "MaskTarget":
        """`resize` then a crop to ``window`` = (x0, y0, w, h) (`translate(-x0, -y0, w, h)`),
        computing only the window: what a resize followed by a crop asks for."""
        x0, y0, cw, ch = window
        return self._gathered(nearest_index(height, self.height, y0, ch),
                              nearest_index(width, self.width, x0, cw), cw, ch)

    def flip(self, width: int, height: int, direction: str = "horizontal") -> "MaskTarget":
        if direction not in FLIP_DIRECTIONS:
            raise ValueError(f"flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}")
        fx, fy = direction in ("horizontal", "diagonal"), direction in ("vertical", "diagonal")
        crops, corners = [], []
        for crop, (x, y) in zip(self.crops, self.corners):
            h, w = crop.shape
            crops.append(crop[::-1 if fy else 1, ::-1 if fx else 1])
            corners.append((width - x - w if fx else x, height - y - h if fy else y))
        return MaskTarget._of(crops, corners, width, height)

    def rotate(self, angle: float, width: int, height: int) -> "MaskTarget":
        """As mmdet ``BitmapMasks.rotate`` under mmrotate's ``Rotate``: mmcv ``imrotate`` (about
        ((w - 1) / 2, (h - 1) / 2), bilinear, border 0), on the full masks."""
        m = rotation_matrix(angle, (width - 1) * 0.5, (height - 1) * 0.5)
        full = self.as_array()
        out = np.zeros((len(full), height, width), np.uint8)
        for i, mask in enumerate(full):
            out[i] = cv2.warpAffine(mask, m, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return MaskTarget(out)

    def translate(self, dx: int, dy: int, width: int, height: int) -> "MaskTarget":
        crops, corners = [], []
        for crop, (x, y) in zip(self.crops, self.corners):
            h, w = crop.shape
            ov = _overlap(w, h, x + dx, y + dy, width, height)
            if crop.size and ov is not None:
                (rs, cs), (rd, cd) = ov
                crops.append(crop[rs, cs])
                corners.append((cd.start, rd.start))
            else:
                crops.append(_EMPTY)
                corners.append((0, 0))
        return MaskTarget._of(crops, corners, width, height)

    def crop(self, x0: int, y0: int, width: int, height: int) -> "MaskTarget":
        return self.translate(-x0, -y0, width, height)

    def blank(self, n: int, width: int, height: int) -> "MaskTarget":
        return MaskTarget._of([_EMPTY] * n, [(0, 0)] * n, width, height)

    @classmethod
    def concat(cls, parts: Sequence["MaskTarget"]) -> "MaskTarget":
        width, height = common_size(parts)
        return cls._of([c for p in parts for c in p.crops], [xy for p in parts for xy in p.corners],
                       width, height)

    def boxes(self) -> np.ndarray:
        """HorizontalBoxes.from_instance_masks: [x_min, y_min, x_max + 1, y_max + 1], zeros if empty."""
        boxes = np.zeros((len(self), 4), np.float32)
        for i, (crop, (x, y)) in enumerate(zip(self.crops, self.corners)):
            ys, xs = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
            if len(xs) and len(ys):
                boxes[i] = (x + xs[0], y + ys[0], x + xs[-1] + 1, y + ys[-1] + 1)
        return boxes

    def as_array(self, step: int = 1) -> np.ndarray:
        """The full bitmaps ``(n, height, width)`` uint8; ``step`` > 1: only their pixels at the
        centres of ``step``-pixel cells, ``[step // 2::step, step // 2::step]`` (all the
        RTMDet-Ins loss reads: 1 / step**2 of the bytes), taken from the crops."""
        h0 = step // 2
        out = np.zeros((len(self), len(range(h0, self.height, step)), len(range(h0, self.width, step))), np.uint8)
        for i, (crop, (x, y)) in enumerate(zip(self.crops, self.corners)):
            h, w = crop.shape
            if crop.size:
                # the grid points inside the crop: first at or after its corner, on the grid
                r0, c0 = -(-(y - h0) // step), -(-(x - h0) // step)
                part = crop[r0 * step + h0 - y::step, c0 * step + h0 - x::step]
                out[i, r0:r0 + part.shape[0], c0:c0 + part.shape[1]] = part
        return out


_EMPTY = np.zeros((0, 0), np.uint8)  # the crop of a mask with nothing in it (never written)


# ----------------------------------------------------------------------------- rotated boxes
def record_rboxes(rec: ImageRecord) -> np.ndarray:
    """(n, 5) float32 le90 rotated boxes of a record's polygons (`poly2obb_le90`: mmrotate's
    ``ConvertBoxType(qbox -> rbox)`` then le90; the loss is indifferent to the representation)."""
    if rec.polygons is None:
        raise ValueError(f"{rec.path}: rotated-box training needs polygon annotations "
                         "(a DOTA or YOLO-OBB dataset)")
    polys = np.asarray(rec.polygons, np.float32).reshape(-1, 8)
    return poly2obb_le90(polys) if len(polys) else np.zeros((0, 5), np.float32)


class RBoxTarget(ArrayTarget):
    """Rotated boxes ``(n, 5) float32`` (cx, cy, w, h, theta), theta in radians, corners =
    centre + R(theta) (+-w/2, +-h/2) (positive theta turns clockwise on screen).

    The reference pipeline (mmrotate 1.x, configs/rotated_rtmdet) converts each DOTA polygon to a
    rotated box right after loading and moves *that* box through every transform (`RotatedBoxes`
    rescale_ / flip_ / rotate_ / translate_), so this target holds boxes, not polygons, and does
    what those methods do: no clipping (a rotated box is never cut at the image border), no
    regularisation (w < h or theta outside [-pi/2, pi/2) may appear after a flip or a rotation;
    the loss regularises the matched boxes). Its ``boxes()`` are the axis-aligned hulls."""

    def __init__(self, data: np.ndarray):
        self.data = np.asarray(data, np.float32).reshape(-1, 5)

    @classmethod
    def from_record(cls, rec: ImageRecord, h: int, w: int) -> "RBoxTarget":
        return cls(record_rboxes(rec))

    def resize(self, sx: float, sy: float, width: int, height: int) -> "RBoxTarget":
        """``RotatedBoxes.rescale_((sx, sy))``: centres scaled, w/h along their own directions,
        theta re-derived from the h-axis. Exact for the (near-)isotropic scales of every
        keep-ratio resize; under a strongly anisotropic one the rotated rectangle becomes a
        parallelogram and this (the reference's) rectangle only approximates it."""
        x, y, w, h, t = (self.data[:, i] for i in range(5))
        sx, sy = np.float32(sx), np.float32(sy)
        cos, sin = np.cos(t), np.sin(t)
        out = np.stack([x * sx, y * sy, w * np.sqrt((sx * cos) ** 2 + (sy * sin) ** 2),
                        h * np.sqrt((sx * sin) ** 2 + (sy * cos) ** 2),
                        np.arctan2(sx * sin, sy * cos)], 1)
        return RBoxTarget(out)

    def flip(self, width: int, height: int, direction: str = "horizontal") -> "RBoxTarget":
        """``RotatedBoxes.flip_``: horizontal cx -> W - cx, vertical cy -> H - cy (both negate
        theta); diagonal both centres, theta unchanged."""
        if direction not in FLIP_DIRECTIONS:
            raise ValueError(f"flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}")
        out = self.data.copy()
        if direction in ("horizontal", "diagonal"):
            out[:, 0] = width - out[:, 0]
        if direction in ("vertical", "diagonal"):
            out[:, 1] = height - out[:, 1]
        if direction != "diagonal":
            out[:, 4] = -out[:, 4]
        return RBoxTarget(out)

    def translate(self, dx: int, dy: int, width: int, height: int) -> "RBoxTarget":
        out = self.data.copy()
        out[:, 0] += dx
        out[:, 1] += dy
        return RBoxTarget(out)

    def crop(self, x0: int, y0: int, width: int, height: int) -> "RBoxTarget":
        return self.translate(-x0, -y0, width, height)

    def rotate(self, angle: float, width: int, height: int) -> "RBoxTarget":
        """``RotatedBoxes.rotate_((W / 2, H / 2), angle)``. The image turns about pixel index
        ((W - 1) / 2, (H - 1) / 2): the same point, as box coordinates count pixel i as [i, i + 1]."""
        m = rotation_matrix(angle, width * 0.5, height * 0.5).astype(np.float32)
        out = self.data.copy()
        out[:, :2] = out[:, :2] @ m[:, :2].T + m[:, 2]
        out[:, 4] += np.float32(angle / 180 * np.pi)
        return RBoxTarget(out)

    def blank(self, n: int, width: int, height: int) -> "RBoxTarget":
        return RBoxTarget(np.zeros((n, 5), np.float32))

    @classmethod
    def concat(cls, parts: Sequence["RBoxTarget"]) -> "RBoxTarget":
        return cls(np.concatenate([p.data for p in parts]))

    def corners(self) -> np.ndarray:
        """(n, 4, 2) corners (mmrotate ``rbox2corner`` order)."""
        x, y, w, h, t = (self.data[:, i:i + 1] for i in range(5))
        cos, sin = np.cos(t), np.sin(t)
        v1 = np.concatenate([w / 2 * cos, w / 2 * sin], 1)
        v2 = np.concatenate([-h / 2 * sin, h / 2 * cos], 1)
        c = np.concatenate([x, y], 1)
        return np.stack([c + v1 + v2, c + v1 - v2, c - v1 - v2, c - v1 + v2], 1)

    def boxes(self) -> np.ndarray:
        """The axis-aligned hull of each box, not clipped (its centre is the box's centre)."""
        if not len(self.data):
            return np.zeros((0, 4), np.float32)
        c = self.corners()
        return np.concatenate([c.min(1), c.max(1)], 1).astype(np.float32)

    def as_array(self) -> np.ndarray:
        return np.ascontiguousarray(self.data)
