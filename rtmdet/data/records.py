"""The one in-memory form every dataset reader produces and every consumer reads."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("rtmdet")
_size_warned: set[str] = set()


@dataclass
class ImageRecord:
    """One image and its annotations, in absolute pixel xyxy boxes and contiguous labels."""

    path: str  # the image file: absolute, or relative to the dataset's `root`
    width: int
    height: int
    image_id: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (n,4) xyxy float32
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # (n,) in 0..C-1
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))  # (n,)
    # Per annotation: a list of polygons (each a flat [x0,y0,x1,y1,...] list) or a COCO RLE dict;
    # None when the source has no masks.
    segmentations: list | None = None
    # Optional per-annotation area as given by the source (COCO "area"); None -> box w*h.
    areas: np.ndarray | None = None
    # Rotated-box sources (DOTA, YOLO-OBB): per annotation the source quadrilateral, (n,8) float32
    # x1,y1,...,x4,y4 in absolute pixels as given (`boxes` holds its axis-aligned hull, clipped to
    # the image; rotated boxes: rtmdet.ops.polygons.poly2obb_le90). None when the source has none.
    polygons: np.ndarray | None = None
    difficult: np.ndarray | None = None  # (n,) bool, DOTA's difficult flag; None when the source has none

    @classmethod
    def build(cls, path, width: int, height: int, image_id: int, boxes, labels, **extra) -> "ImageRecord":
        """A record from plain lists (absolute path, (n,4) boxes, n labels, no crowd flags)."""
        n = len(labels)
        return cls(str(os.path.abspath(path)), width, height, image_id,
                   np.array(boxes, np.float32).reshape(n, 4), np.array(labels, np.int64).reshape(n),
                   np.zeros(n, bool), **extra)


@dataclass
class DetectionDataset:
    """A whole dataset: records plus the class names and the mapping back to source category ids."""

    records: list[ImageRecord]
    class_names: list[str]
    cat_ids: list[int]  # contiguous label i <-> original category id cat_ids[i]
    root: str = ""
    # What the reader skipped/fixed on load (rtmdet.data.datasets.LoadReport); None if not validated.
    report: object | None = None

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, rec: ImageRecord) -> str:
        """Where `rec`'s image is (an absolute `rec.path` is taken as it is)."""
        return os.path.join(self.root, rec.path) if self.root else rec.path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_decoded_size(rec: ImageRecord, shape, path: str) -> bool:
    """Whether the decoded image (`shape`: its (h, w, ...)) has the size its record says; when
    not, one warning per image and process: its boxes refer to another picture than the one
    the model sees (usually an EXIF orientation the annotation tool ignored, or a json with the
    wrong width/height)."""
    h, w = int(shape[0]), int(shape[1])
    if (w, h) == (int(rec.width), int(rec.height)):
        return True
    if path not in _size_warned:
        _size_warned.add(path)
        turned = " (turned by its EXIF orientation?)" if (h, w) == (int(rec.width), int(rec.height)) else ""
        log.warning("%s: the annotations are for a %dx%d image but it reads as %dx%d%s; its boxes "
                    "may not be where the objects are", path, rec.width, rec.height, w, h, turned)
    return False
