"""What a dataset reader found wrong (`LoadReport`) and the checks every reader shares.

Nothing is changed silently: boxes that are skipped or clipped, images that are missing, and
category ids that are unknown are counted in a `LoadReport` (attached as ``dataset.report`` and
logged as one line). ``strict=True`` turns any problem into a ``ValueError`` that lists them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .files import read_image_size
from .records import DetectionDataset

__all__ = ["LoadReport", "finish", "clip_box", "image_size", "ROUNDING_PX"]

log = logging.getLogger("rtmdet.data.datasets")  # the name the readers have always logged under

_MAX_EXAMPLES = 5  # examples kept per problem kind, to keep messages short


@dataclass
class LoadReport:
    """What a reader found wrong and what it did about it."""

    source: str
    num_images: int = 0  # images kept
    num_annotations: int = 0  # annotations kept
    missing_images: int = 0  # image file not found -> image skipped
    unreadable_images: int = 0  # header could not be read -> image skipped
    duplicate_image_ids: int = 0  # second and later entries with the same id -> skipped
    degenerate_boxes: int = 0  # zero/negative/non-finite size (or nothing left inside the image) -> skipped
    clipped_boxes: int = 0  # partly outside the image -> clipped to it
    unknown_categories: int = 0  # category id / class index not in the category list -> skipped
    orphan_annotations: int = 0  # annotation for an image id that is not listed -> skipped
    malformed_annotations: int = 0  # unparsable label line / bbox field -> skipped
    malformed_segmentations: int = 0  # neither polygons nor RLE of the image -> mask dropped, box kept
    examples: dict[str, list[str]] = field(default_factory=dict)

    _KINDS = (
        ("missing_images", "missing image files (skipped)"),
        ("unreadable_images", "unreadable images (skipped)"),
        ("duplicate_image_ids", "duplicate image ids (later ones skipped)"),
        ("degenerate_boxes", "zero/negative-size boxes (skipped)"),
        ("clipped_boxes", "boxes partly outside the image (clipped)"),
        ("unknown_categories", "annotations with unknown category (skipped)"),
        ("orphan_annotations", "annotations for unknown image ids (skipped)"),
        ("malformed_annotations", "malformed annotations (skipped)"),
        ("malformed_segmentations", "malformed segmentations (mask dropped, box kept)"),
    )

    def add(self, kind: str, example: str, n: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        ex = self.examples.setdefault(kind, [])
        if len(ex) < _MAX_EXAMPLES:
            ex.append(example)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, k) for k, _ in self._KINDS)

    def problems(self) -> list[str]:
        out = []
        for kind, text in self._KINDS:
            n = getattr(self, kind)
            if n:
                ex = self.examples.get(kind, [])
                more = ", ..." if n > len(ex) else ""
                out.append(f"{n} {text}: {', '.join(ex)}{more}")
        return out

    def summary(self) -> str:
        head = f"{self.source}: {self.num_images} images, {self.num_annotations} annotations"
        parts = [f"{getattr(self, k)} {t}" for k, t in self._KINDS if getattr(self, k)]
        return head + ("; " + "; ".join(parts) if parts else "; no problems found")

    def __str__(self) -> str:
        return self.summary()


def finish(ds: DetectionDataset, report: LoadReport, strict: bool) -> DetectionDataset:
    """Count what was kept, raise (strict) or log the report, attach it as ``ds.report``."""
    report.num_images = len(ds.records)
    report.num_annotations = int(sum(len(r.boxes) for r in ds.records))
    if strict and not report.ok:
        raise ValueError(f"{report.source}: dataset has problems (strict=True):\n  " + "\n  ".join(report.problems()))
    (log.info if report.ok else log.warning)(report.summary())
    ds.report = report
    return ds


# a box that leaves the image by less than this (pixels) is float rounding of a correct
# annotation (normalised YOLO coordinates, converted COCO boxes): clipped without a report
ROUNDING_PX = 0.01


def clip_box(x1, y1, x2, y2, w, h, tol: float = 0.0):
    """Clip an xyxy box to [0,w]x[0,h]; return (box, was_clipped) or (None, _) if nothing is left.
    `was_clipped` is False when the box left the image by no more than `tol` pixels."""
    cx1, cy1 = min(max(x1, 0.0), w), min(max(y1, 0.0), h)
    cx2, cy2 = min(max(x2, 0.0), w), min(max(y2, 0.0), h)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, True
    moved = max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2))
    return (cx1, cy1, cx2, cy2), moved > tol


def image_size(path: Path, report: LoadReport, must_exist: bool = True) -> tuple[int, int] | None:
    """(width, height) of an image; None, reported, when the file is missing (checked here when
    ``must_exist``) or its header cannot be read."""
    if must_exist and not path.is_file():
        report.add("missing_images", str(path))
        return None
    size = read_image_size(path)
    if size is None:
        report.add("unreadable_images", str(path))
    return size
