"""Polygon instance masks (`PolygonTarget`): the reference RTMDet-Ins pipelines load masks with
``poly2mask=False`` and move the *polygons* through Mosaic, RandomResize, RandomCrop, flip, Pad
and MixUp (mmdet ``PolygonMasks``), rasterising them only for the loss, with COCO's mask API.
Holding the same polygons and doing the same arithmetic gives the reference's targets:

* boxes recomputed after the crop (``recompute_bbox=True``) are the polygons' float extents
  (``HorizontalBoxes.from_instance_masks``), not a bitmap's integer ones;
* the masks the loss reads are the polygons drawn by pycocotools' rules (`ops.polygon_raster`).

Two departures, both where following mmdet would put a mask off its object: coordinates are
float64 always (mmdet keeps the arrays JSON gives it, so integer-valued annotations stay integer
arrays and every resize truncates them), and a MixUp image flipped inside a wider canvas is
flipped about the canvas (mmdet flips its polygons about the rescaled mask's own width, which
differs when the cached image is narrower than the canvas; never in the recipes, whose MixUp
caches padded square samples).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely

from ..ops.polygon_raster import rasterize_instances
from .records import ImageRecord
from .targets import FLIP_DIRECTIONS, common_size, rotation_matrix, selected_indices

__all__ = ["PolygonTarget", "record_polygons", "missing_polygons"]


def _dummy() -> np.ndarray:
    """What mmdet puts where an instance has no polygon: three points at the origin (no area,
    no pixels, box (0, 0, 0, 0))."""
    return np.zeros(6, np.float64)


def _kept(seg) -> list:
    """The polygons of one segmentation mmdet keeps: an even number >= 6 of coordinates each
    (none for an RLE dict or a missing segmentation)."""
    return [p for p in seg if len(p) % 2 == 0 and len(p) >= 6] if isinstance(seg, list) else []


def missing_polygons(rec: ImageRecord) -> np.ndarray:
    """(n,) bool: the instances with no polygon mmdet keeps (an RLE or empty segmentation:
    mmdet ignores those instances and gives them a dummy)."""
    segs = rec.segmentations or []
    return np.array([not _kept(segs[i] if i < len(segs) else None) for i in range(len(rec.boxes))], bool)


def record_polygons(rec: ImageRecord) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Each instance's polygons (flat float64 x, y, ...) as mmdet ``LoadAnnotations(poly2mask=False)``
    keeps them, and which instances have none (`missing_polygons`; those get the dummy)."""
    segs = rec.segmentations or []
    polys, missing = [], np.zeros(len(rec.boxes), bool)
    for i in range(len(rec.boxes)):
        ps = [np.array(p, np.float64) for p in _kept(segs[i] if i < len(segs) else None)]
        missing[i] = not ps
        polys.append(ps or [_dummy()])
    return polys, missing


class PolygonTarget:
    """Instance masks as polygons on a ``width`` x ``height`` image: per instance a list of flat
    float64 arrays (x0, y0, x1, y1, ...), moved as mmdet ``PolygonMasks`` moves them (see the
    module docstring); ``as_array`` draws them."""

    def __init__(self, polys: list[list[np.ndarray]], width: int, height: int):
        self.polys, self.width, self.height = polys, int(width), int(height)

    @classmethod
    def from_record(cls, rec: ImageRecord, h: int, w: int) -> "PolygonTarget":
        return cls(record_polygons(rec)[0], w, h)

    def __len__(self) -> int:
        return len(self.polys)

    def __repr__(self) -> str:
        return f"PolygonTarget({len(self)} instances on {self.width}x{self.height})"

    def _map(self, fn, width: int, height: int) -> "PolygonTarget":
        return PolygonTarget([[fn(p) for p in ps] for ps in self.polys], width, height)

    def select(self, keep: np.ndarray) -> "PolygonTarget":
        keep = selected_indices(keep, len(self))
        if keep is None:
            return self
        return PolygonTarget([self.polys[i] for i in keep], self.width, self.height)

    def resize(self, sx: float, sy: float, width: int, height: int) -> "PolygonTarget":
        """``PolygonMasks.rescale``: the factors are the rounded new size over the old,
        int(old * s + 0.5) / old per axis. In `Resize` that is (sx, sy) itself; in Mosaic and
        MixUp (which rescale by a float) it can differ from the image's int(old * s) by a pixel,
        as in the reference."""
        fx = int(self.width * float(sx) + 0.5) / self.width
        fy = int(self.height * float(sy) + 0.5) / self.height

        def scale(p):
            q = p.copy()
            q[0::2] = q[0::2] * fx
            q[1::2] = q[1::2] * fy
            return q
        return self._map(scale, width, height)

    def resize_window(self, sx: float, sy: float, width: int, height: int,
                      window: tuple[int, int, int, int]) -> "PolygonTarget":
        return self.resize(sx, sy, width, height).crop(*window)

    def flip(self, width: int, height: int, direction: str = "horizontal") -> "PolygonTarget":
        if direction not in FLIP_DIRECTIONS:
            raise ValueError(f"flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}")

        def flip(p):
            q = p.copy()
            if direction in ("horizontal", "diagonal"):
                q[0::2] = width - q[0::2]
            if direction in ("vertical", "diagonal"):
                q[1::2] = height - q[1::2]
            return q
        return self._map(flip, width, height)

    def translate(self, dx: int, dy: int, width: int, height: int) -> "PolygonTarget":
        """``PolygonMasks.translate``: coordinates moved, then clamped into the new image (what
        Mosaic places tiles and MixUp crops with; a vertex outside lands on the border)."""
        def move(p):
            q = p.copy()
            q[0::2] = np.clip(q[0::2] + dx, 0, width)
            q[1::2] = np.clip(q[1::2] + dy, 0, height)
            return q
        return self._map(move, width, height)

    def crop(self, x0: int, y0: int, width: int, height: int) -> "PolygonTarget":
        """``PolygonMasks.crop`` (RandomCrop): each polygon, made valid by shapely's
        ``buffer(0)``, intersected with the crop box; every resulting polygon's outer ring is
        kept (lines and points are not), moved to the crop's origin; an instance left with
        nothing gets the dummy. Vectorised over every polygon of the sample (same GEOS calls)."""
        x1, x2 = np.clip([x0, x0 + width], 0, self.width)
        y1, y2 = np.clip([y0, y0 + height], 0, self.height)
        out_w, out_h = max(int(x2 - x1), 1), max(int(y2 - y1), 1)
        flat = [p for ps in self.polys for p in ps]
        owner = np.repeat(np.arange(len(self)), [len(ps) for ps in self.polys])
        polys: list[list[np.ndarray]] = [[] for _ in range(len(self))]
        if flat:
            pts = [p.reshape(-1, 2) for p in flat]
            rings = shapely.linearrings(np.concatenate(pts), indices=np.repeat(np.arange(len(pts)),
                                                                                [len(q) for q in pts]))
            with np.errstate(invalid="ignore"):
                geoms = shapely.buffer(shapely.polygons(rings), 0.0)
                box = shapely.buffer(shapely.box(x1, y1, x2, y2), 0.0)
                ok = shapely.is_valid(geoms)
                cut = shapely.intersection(geoms[ok], box)
            owner = owner[ok][~shapely.is_empty(cut)]
            parts, which = shapely.get_parts(cut[~shapely.is_empty(cut)], return_index=True)
            good = ((shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & shapely.is_valid(parts)
                    & ~shapely.is_empty(parts))
            coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(parts[good]), return_index=True)
            counts = np.bincount(ring, minlength=int(good.sum()))
            for inst, start, count in zip(owner[which[good]], np.cumsum(counts) - counts, counts):
                c = coords[start:start + count - 1].copy()  # the ring's closing point dropped
                c[:, 0] -= x1
                c[:, 1] -= y1
                polys[inst].append(c.reshape(-1))
        return PolygonTarget([ps or [_dummy()] for ps in polys], out_w, out_h)

    def rotate(self, angle: float, width: int, height: int) -> "PolygonTarget":
        """The vertices turned with the image (about ((w - 1) / 2, (h - 1) / 2)), clamped into it
        (``PolygonMasks.rotate``)."""
        m = rotation_matrix(angle, (width - 1) * 0.5, (height - 1) * 0.5)

        def turn(p):
            xy = p.reshape(-1, 2) @ m[:, :2].T + m[:, 2]
            xy[:, 0] = np.clip(xy[:, 0], 0, width)
            xy[:, 1] = np.clip(xy[:, 1], 0, height)
            return xy.reshape(-1)
        return self._map(turn, width, height)

    def blank(self, n: int, width: int, height: int) -> "PolygonTarget":
        return PolygonTarget([[_dummy()] for _ in range(n)], width, height)

    @classmethod
    def concat(cls, parts: Sequence["PolygonTarget"]) -> "PolygonTarget":
        width, height = common_size(parts)
        return cls([ps for p in parts for ps in p.polys], width, height)

    def boxes(self) -> np.ndarray:
        """``HorizontalBoxes.from_instance_masks`` for polygons: float32 min / max over each
        instance's vertices (a dummy gives (0, 0, 0, 0))."""
        boxes = np.zeros((len(self), 4), np.float32)
        for i, ps in enumerate(self.polys):
            lo = np.array([self.width * 2, self.height * 2], np.float32)
            hi = np.zeros(2, np.float32)
            for p in ps:
                xy = p.reshape(-1, 2).astype(np.float32)
                lo, hi = np.minimum(lo, xy.min(0)), np.maximum(hi, xy.max(0))
            boxes[i, :2], boxes[i, 2:] = lo, hi
        return boxes

    def as_array(self, step: int = 1) -> np.ndarray:
        """The masks ``(n, height, width)`` uint8 as pycocotools draws the polygons (what the
        reference's loss gets from ``PolygonMasks.to_tensor``); ``step`` > 1: only the pixels
        at ``[step // 2::step, step // 2::step]``, computed directly (the RTMDet-Ins loss reads
        no others)."""
        owners = np.repeat(np.arange(len(self)), [len(ps) for ps in self.polys])
        return rasterize_instances([p for ps in self.polys for p in ps], owners, len(self),
                                   self.height, self.width, step)
