"""What `TrainDataset(targets=(name, ...))` loads for each target name, from a record.

``"masks"`` follows the reference RTMDet-Ins configs (``LoadAnnotations(poly2mask=False)``):
polygon masks (`PolygonTarget`). A dataset where some instance that is trained on has only an
RLE mask (the reference would ignore such instances) gets bitmap masks (`MaskTarget`, as
``poly2mask=True``) for all its images instead: a Mosaic mixes images, so one kind per dataset.
Either way an instance whose segmentation gives no mask at all is ignored, as mmdet does.
``"rboxes"``: rotated boxes from the records' polygons.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from .polygon_masks import PolygonTarget, missing_polygons
from .records import ImageRecord
from .targets import MaskTarget, RBoxTarget, Target

__all__ = ["TargetLoader", "MaskLoader", "TARGET_LOADERS", "resolve_loader"]

log = logging.getLogger(__name__)

TargetLoader = Callable[[ImageRecord, int, int], Target]  # (record, image height, image width) -> target


def _rle(seg) -> bool:
    return isinstance(seg, dict) and seg.get("counts") is not None and seg.get("size") is not None


class MaskLoader:
    """The ``"masks"`` loader: ``kind`` "polygons" or "bitmaps"; None decides per record (a
    dataset's loader is decided once for all its records by `for_records`)."""

    def __init__(self, kind: str | None = None):
        if kind not in (None, "polygons", "bitmaps"):
            raise ValueError(f"mask kind must be 'polygons' or 'bitmaps', got {kind!r}")
        self.kind = kind

    def __repr__(self) -> str:
        return f"MaskLoader({self.kind!r})"

    @staticmethod
    def _needs_bitmaps(rec: ImageRecord) -> bool:
        crowd = rec.iscrowd if len(rec.iscrowd) == len(rec.boxes) else np.zeros(len(rec.boxes), bool)
        return any(_rle(seg) and not c for seg, c in zip(rec.segmentations or [], crowd))

    def for_records(self, records: Sequence[ImageRecord]) -> "MaskLoader":
        """The loader for a dataset: polygons unless some non-crowd instance has an RLE mask.
        Raises when no instance has a mask at all (training masks on nothing)."""
        if not any(seg for rec in records for seg in (rec.segmentations or [])):
            raise ValueError("instance segmentation training needs masks: no image of the dataset has a "
                             "segmentation (COCO 'segmentation' polygons / RLE, or YOLO polygon labels)")
        if self.kind is not None:
            return self
        n = sum(self._needs_bitmaps(r) for r in records)
        if n:
            log.info("masks: %d image(s) hold non-crowd RLE masks; training on bitmap masks", n)
        return MaskLoader("bitmaps" if n else "polygons")

    def ignored(self, rec: ImageRecord) -> np.ndarray:
        """(n,) bool: instances whose segmentation gives no mask (mmdet sets their ignore flag):
        no polygon with an even number >= 6 of coordinates and, for polygons, not RLE either
        (RLE instances only reach a polygon loader as crowds, which are ignored anyway)."""
        missing = missing_polygons(rec)
        if self.kind != "polygons":
            segs = rec.segmentations or []
            missing &= ~np.array([_rle(segs[i]) if i < len(segs) else False for i in range(len(missing))], bool)
        return missing

    def __call__(self, rec: ImageRecord, h: int, w: int) -> Target:
        kind = self.kind or ("bitmaps" if self._needs_bitmaps(rec) else "polygons")
        return PolygonTarget.from_record(rec, h, w) if kind == "polygons" else MaskTarget.from_record(rec, h, w)


def resolve_loader(loader: TargetLoader, records: Sequence[ImageRecord]) -> TargetLoader:
    """A loader decided for a dataset (one with ``for_records``), else the loader itself."""
    resolve = getattr(loader, "for_records", None)
    return resolve(records) if resolve is not None else loader


TARGET_LOADERS: dict[str, TargetLoader] = {
    "masks": MaskLoader(),
    "rboxes": RBoxTarget.from_record,
}
