"""Cut large aerial images (DOTA) and their polygon labels into fixed-size patches.

The same windows, object selection, padding and file names as mmrotate's
``tools/data/dota/split/img_split.py``, so patches (and models trained on them) are
interchangeable with data split by mmrotate:

- windows of ``size = int(patch / rate)`` px every ``size - int(overlap / rate)`` px; the last
  window of a row/column is moved back to end at the image edge; a window is only larger than the
  image where the image is smaller than ``size`` (then the patch is padded bottom/right with
  ``pad_value``); windows covering at most ``img_rate_thr`` image are dropped (unless all are);
- an object goes into a window when area(polygon ∩ window) / area(polygon) >= ``iof_thr``; its
  polygon is NOT clipped, only shifted by the window origin; an object cut by the window
  (iof < 1) is written with difficult = 2;
- the patch is not resized (a rate only changes the window size); names are
  ``{stem}__{size}__{x}___{y}{ext}`` (mmrotate's; its merge step reads ``__x___y``).
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..ops.polygons import clip_polygon_to_rect, polygon_area
from .files import list_images
from .dota import PolygonLoadReport, read_dota_txt, save_dota_txt

__all__ = ["sliding_windows", "window_objects", "split_images", "SplitSummary"]

log = logging.getLogger(__name__)


def sliding_windows(
    width: int, height: int, sizes: Sequence[int], overlaps: Sequence[int], img_rate_thr: float = 0.6
) -> np.ndarray:
    """(k,4) int64 windows x0,y0,x1,y1 over a width x height image, for each (size, overlap) pair.

    Order: per size, x outer and y inner. Windows whose share of image area is <= img_rate_thr are
    dropped; if that drops all, those within 0.01 of the best share are kept.
    """
    wins = []
    for size, gap in zip(sizes, overlaps):
        if not size > gap >= 0:
            raise ValueError(f"need patch size > overlap >= 0, got {size}, {gap}")
        step = size - gap
        starts = []
        for length in (width, height):
            n = 1 if length <= size else math.ceil((length - size) / step + 1)
            s = [step * i for i in range(n)]
            if len(s) > 1 and s[-1] + size > length:
                s[-1] = length - size
            starts.append(s)
        start = np.array(list(itertools.product(*starts)), np.int64).reshape(-1, 2)
        wins.append(np.concatenate([start, start + size], axis=1))
    wins = np.concatenate(wins, axis=0)
    inside_w = np.clip(wins[:, 2], 0, width) - np.clip(wins[:, 0], 0, width)
    inside_h = np.clip(wins[:, 3], 0, height) - np.clip(wins[:, 1], 0, height)
    rates = inside_w * inside_h / ((wins[:, 2] - wins[:, 0]) * (wins[:, 3] - wins[:, 1]))
    if not (rates > img_rate_thr).any():
        rates[np.abs(rates - rates.max()) < 0.01] = 1
    return wins[rates > img_rate_thr]


def window_objects(polygons: np.ndarray, windows: np.ndarray, iof_thr: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per window: (indices of the objects it keeps, whether each is truncated i.e. iof < 1).

    iof = area(polygon ∩ window) / max(area(polygon), 1e-6); kept when iof >= iof_thr.
    """
    polys = np.asarray(polygons, np.float64).reshape(-1, 4, 2)
    iofs = np.zeros((len(polys), len(windows)))
    if len(polys) and len(windows):
        areas = np.maximum(polygon_area(polys), 1e-6)
        lo, hi = polys.min(axis=1), polys.max(axis=1)
        for i, j in zip(*np.nonzero(  # only pairs whose hulls overlap with positive area
            (np.minimum(hi[:, None, 0], windows[None, :, 2]) > np.maximum(lo[:, None, 0], windows[None, :, 0]))
            & (np.minimum(hi[:, None, 1], windows[None, :, 3]) > np.maximum(lo[:, None, 1], windows[None, :, 1]))
        )):
            inter = clip_polygon_to_rect(polys[i], *windows[j].tolist())
            iofs[i, j] = polygon_area(inter) / areas[i]
    out = []
    for j in range(len(windows)):
        keep = np.nonzero(iofs[:, j] >= iof_thr)[0]
        out.append((keep, iofs[keep, j] < 1))
    return out


@dataclass
class SplitSummary:
    """What `split_images` did; nothing is dropped without being listed here."""

    out_dir: str
    images: int = 0  # source images split
    patches: int = 0  # patches written
    objects: int = 0  # valid objects read from the labels
    patch_objects: int = 0  # object lines written over all patches
    unreadable: list[str] = field(default_factory=list)  # images cv2 could not decode (not split)
    unlabelled: list[str] = field(default_factory=list)  # images without a label file (split, no objects)
    labels: PolygonLoadReport | None = None  # label problems: bad lines, degenerate polygons, labels w/o image

    def __str__(self) -> str:
        s = (f"{self.out_dir}: {self.images} images -> {self.patches} patches, "
             f"{self.objects} objects -> {self.patch_objects} patch objects")
        if self.unreadable:
            s += f"; {len(self.unreadable)} unreadable images (not split): {', '.join(self.unreadable)}"
        if self.unlabelled:
            s += f"; {len(self.unlabelled)} images without a label file (no objects)"
        if self.labels is not None and self.labels.problems():
            s += "; labels: " + "; ".join(self.labels.problems())
        return s


def split_images(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    patch: int = 1024,
    overlap: int = 200,
    rates: Sequence[float] = (1.0,),
    iof_thr: float = 0.7,
    pad_value: int | Sequence[int] = 114,
    img_rate_thr: float = 0.6,
    ext: str = ".png",
    progress: bool = True,
) -> SplitSummary:
    """Split every image of ``images_dir`` (DOTA labels by stem in ``labels_dir``) into patches.

    Writes ``out_dir/images/<name>{ext}`` and ``out_dir/annfiles/<name>.txt`` (DOTA txt, one per
    patch, empty when it holds no object; also without ``labels_dir``, as mmrotate does), see the
    module docstring for the rules. ``pad_value``: one value or one per BGR channel (mmrotate's
    DOTA configs use (104, 116, 124)). ``out_dir`` must not exist or be empty. Class names are
    copied as written; label lines that cannot be parsed and zero-area polygons are left out and
    reported. Returns a `SplitSummary` (also logged).
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise FileNotFoundError(f"labels folder not found: {labels_dir}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; give a new folder")
    if not 0 <= iof_thr <= 1:
        raise ValueError(f"iof_thr must be in [0, 1], got {iof_thr}")
    sizes = [int(patch / r) for r in rates]
    overlaps = [int(overlap / r) for r in rates]
    img_out, ann_out = out_dir / "images", out_dir / "annfiles"
    img_out.mkdir(parents=True)
    ann_out.mkdir()

    report = PolygonLoadReport(source=str(labels_dir if labels_dir is not None else images_dir))
    summary = SplitSummary(out_dir=str(out_dir), labels=report)
    images = list_images(images_dir, recursive=False)
    if labels_dir is not None:
        stems = {p.stem for p in images}
        for lp in sorted(Path(labels_dir).glob("*.txt")):
            if lp.stem not in stems:
                report.add("missing_images", f"{lp.name}: no image {lp.stem}.*")

    for img_path in tqdm(images, desc="split", unit="img", disable=not progress):
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if img is None:
            summary.unreadable.append(str(img_path))
            continue
        h, w = img.shape[:2]
        polys, names, diffs = np.zeros((0, 8)), [], np.zeros(0, np.int64)
        lp = Path(labels_dir) / f"{img_path.stem}.txt" if labels_dir is not None else None
        if lp is not None and not lp.is_file():
            summary.unlabelled.append(str(img_path))
        elif lp is not None:
            objs = read_dota_txt(lp)
            for ln_no, line in objs.malformed:
                report.add("malformed_annotations", f"{lp.name}:{ln_no} {line!r}")
            ok = np.all(np.isfinite(objs.polygons), axis=1) & (polygon_area(objs.polygons.reshape(-1, 4, 2)) > 0)
            for k in np.nonzero(~ok)[0]:
                report.add("degenerate_boxes", f"{lp.name}: {objs.names[k]} {objs.polygons[k].tolist()}")
            polys, diffs = objs.polygons[ok], objs.difficult[ok]
            names = [n for n, o in zip(objs.names, ok) if o]
        summary.images += 1
        summary.objects += len(polys)

        windows = sliding_windows(w, h, sizes, overlaps, img_rate_thr)
        for (x0, y0, x1, y1), (keep, trunc) in zip(windows.tolist(), window_objects(polys, windows, iof_thr)):
            crop = img[y0:y1, x0:x1]
            if crop.shape[0] < y1 - y0 or crop.shape[1] < x1 - x0:
                padded = np.empty((y1 - y0, x1 - x0, img.shape[2]), img.dtype)
                padded[...] = pad_value
                padded[: crop.shape[0], : crop.shape[1]] = crop
                crop = padded
            name = f"{img_path.stem}__{x1 - x0}__{x0}___{y0}"
            if not cv2.imwrite(str(img_out / f"{name}{ext}"), crop):
                raise OSError(f"could not write {img_out / f'{name}{ext}'}")
            shifted = polys[keep].astype(np.float32) - np.array([x0, y0] * 4, np.float32)
            _write_patch_labels(ann_out / f"{name}.txt", shifted, [names[k] for k in keep],
                                np.where(trunc, 2, diffs[keep]))
            summary.patches += 1
            summary.patch_objects += len(keep)

    (log.warning if summary.unreadable or report.problems() else log.info)(str(summary))
    return summary


def _write_patch_labels(path: Path, polys: np.ndarray, names: list[str], diffs: np.ndarray) -> None:
    """DOTA txt with class names as read (save_dota_txt takes label indices into a name list)."""
    uniq = sorted(set(names))
    labels = np.array([uniq.index(n) for n in names], np.int64)
    save_dota_txt(path, polys, uniq, labels, difficult=diffs)
