"""Rotated-box datasets: DOTA txt and YOLO-OBB txt into the shared `DetectionDataset` form.

Each object keeps its source quadrilateral (``ImageRecord.polygons``, (n,8) absolute px, as
written in the file) and its ``difficult`` flag; ``boxes`` holds the quadrilateral's axis-aligned
hull clipped to the image, so box-only code keeps working. Rotated (cx,cy,w,h,theta) boxes come
from the polygons with `rtmdet.ops.polygons.poly2obb_le90`, as mmrotate's ``ConvertBoxType`` does.

Validation follows `rtmdet.data.datasets`: everything skipped is counted in the report (one log
line, ``strict=True`` raises). Polygons partly outside the image are normal in DOTA: they are
counted as a note, kept unchanged, and do not fail ``strict``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import write_text
from ..ops.polygons import polygon_area
from .files import list_images
from .report import LoadReport, finish, image_size
from .yolo import class_index, find_split, labelled_images
from .records import DetectionDataset, ImageRecord

__all__ = [
    "DOTA_V1_CLASSES",
    "DOTA_V15_CLASSES",
    "PolygonLoadReport",
    "DotaObjects",
    "read_dota_txt",
    "load_dota",
    "find_dota_split",
    "is_dota_folder",
    "load_dota_folder",
    "load_yolo_obb",
    "save_dota_txt",
]

# mmrotate DOTADataset / DOTAv15Dataset METAINFO['classes'], in this order (label = index).
DOTA_V1_CLASSES = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle",
    "ship", "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout",
    "harbor", "swimming-pool", "helicopter",
)
DOTA_V15_CLASSES = DOTA_V1_CLASSES + ("container-crane",)

_HEADERS = ("imagesource:", "gsd:")


@dataclass
class PolygonLoadReport(LoadReport):
    """`LoadReport` plus the two cases polygon datasets add.

    ``outside_polygons`` is a note, not a problem: such objects are kept, ``ok`` ignores it.
    """

    unlabelled_images: int = 0  # image without a label file -> skipped (as mmrotate's DOTADataset)
    outside_polygons: int = 0  # polygon partly outside the image -> kept as given, its box clipped

    _KINDS = LoadReport._KINDS + (
        ("unlabelled_images", "images without a label file (skipped)"),
        ("outside_polygons", "polygons partly outside the image (kept, boxes clipped)"),
    )
    _NOTES = ("outside_polygons",)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, k) for k, _ in self._KINDS if k not in self._NOTES)


@dataclass
class DotaObjects:
    """The objects of one DOTA label file, as written (class names not yet checked)."""

    polygons: np.ndarray  # (n,8) float64
    names: list[str]  # class name per object
    difficult: np.ndarray  # (n,) int64 (0/1 in DOTA; the split tool writes 2 for truncated objects)
    malformed: list[tuple[int, str]]  # (line number, line) of lines that could not be parsed
    gsd: float | None = None


def read_dota_txt(path: str | os.PathLike) -> DotaObjects:
    """Parse a DOTA label file: optional ``imagesource:``/``gsd:`` header lines, then per line
    ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]`` (difficult defaults to 0, as mmrotate's split
    tool reads it). Lines with another layout are returned in ``malformed``; blank lines are skipped.
    """
    polys, names, diffs, bad, gsd = [], [], [], [], None
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for ln_no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.lower().startswith(_HEADERS):
            if s.lower().startswith("gsd:"):
                try:
                    gsd = float(s.split(":", 1)[1])
                except ValueError:
                    gsd = None  # 'gsd:null' in some files
            continue
        vals = s.split()
        try:
            if len(vals) not in (9, 10):
                raise ValueError
            xy = [float(v) for v in vals[:8]]
            diff = int(vals[9]) if len(vals) == 10 else 0
        except ValueError:
            bad.append((ln_no, s))
            continue
        polys.append(xy)
        names.append(vals[8])
        diffs.append(diff)
    return DotaObjects(np.array(polys, np.float64).reshape(-1, 8), names, np.array(diffs, np.int64), bad, gsd)


def _check_polygon(poly: np.ndarray, w: int, h: int, where: str, report: PolygonLoadReport):
    """Validate one absolute (8,) polygon; return its clipped xyxy hull, or None (reported) to skip."""
    if not np.all(np.isfinite(poly)):
        report.add("degenerate_boxes", f"{where} non-finite")
        return None
    if polygon_area(poly.reshape(4, 2)) <= 0:
        report.add("degenerate_boxes", f"{where} zero area")
        return None
    xs, ys = poly[0::2], poly[1::2]
    x1, y1, x2, y2 = max(xs.min(), 0.0), max(ys.min(), 0.0), min(xs.max(), w), min(ys.max(), h)
    if x2 <= x1 or y2 <= y1:
        report.add("degenerate_boxes", f"{where} outside the {w}x{h} image")
        return None
    if xs.min() < 0 or ys.min() < 0 or xs.max() > w or ys.max() > h:
        report.add("outside_polygons", where)
    return (float(x1), float(y1), float(x2), float(y2))


def _record(path: Path, w: int, h: int, iid: int, objs: list) -> ImageRecord:
    """objs: (polygon (8,), xyxy, label, difficult)."""
    n = len(objs)
    return ImageRecord.build(path, w, h, iid, [o[1] for o in objs], [o[2] for o in objs],
                             polygons=np.array([o[0] for o in objs], np.float32).reshape(n, 8),
                             difficult=np.array([o[3] for o in objs], bool).reshape(n))


def _images_by_stem(images_dir: Path, report: PolygonLoadReport) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in list_images(images_dir, recursive=False):
        if p.stem in out:
            report.add("duplicate_image_ids", f"{p.name} (same stem as {out[p.stem].name})")
            continue
        out[p.stem] = p
    return out


# ----------------------------------------------------------------------------------------- DOTA


def load_dota(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] = DOTA_V1_CLASSES,
    strict: bool = False,
) -> DetectionDataset:
    """Read a DOTA folder pair: images (``.png`` etc.) and ``labelTxt``/``annfiles`` txt by stem.

    As mmrotate's ``DOTADataset``: with ``labels_dir`` the dataset is the labelled images (an
    image without a label file is skipped, and reported here); an empty label file is an image
    without objects. ``labels_dir=None`` (test set) gives every image with no objects.
    Skipped and reported: label files without an image (``missing_images``), unreadable images,
    unparsable lines, classes not in ``class_names``, non-finite / zero-area polygons and polygons
    wholly outside the image. Kept and noted: polygons partly outside the image (polygon as given;
    its ``boxes`` hull clipped to the image). ``difficult`` is the flag != 0 (mmrotate ignores none
    by default: ``diff_thr=100``).
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"DOTA images folder not found: {images_dir}")
    report = PolygonLoadReport(source=str(labels_dir if labels_dir is not None else images_dir))
    images = _images_by_stem(images_dir, report)
    if labels_dir is None:
        labels: dict[str, Path] = {}
        stems = sorted(images)
    else:
        labels_dir = Path(labels_dir)
        if not labels_dir.is_dir():
            raise FileNotFoundError(f"DOTA labels folder not found: {labels_dir}")
        labels = {p.stem: p for p in sorted(labels_dir.glob("*.txt"))}
        if not labels:
            raise ValueError(f"{labels_dir}: no .txt label files")
        stems = sorted(set(images) | set(labels))
    cls_to_label = {c: i for i, c in enumerate(class_names)}

    records = []
    for stem in stems:
        img = images.get(stem)
        if img is None:
            report.add("missing_images", f"{labels[stem].name}: no image {stem}.*")
            continue
        if labels_dir is not None and stem not in labels:
            report.add("unlabelled_images", img.name)
            continue
        size = image_size(img, report, must_exist=False)  # listed from the folder
        if size is None:
            continue
        w, h = size
        objs = []
        if stem in labels:
            lp = labels[stem]
            parsed = read_dota_txt(lp)
            for ln_no, line in parsed.malformed:
                report.add("malformed_annotations", f"{lp.name}:{ln_no} {line!r}")
            for poly, name, diff in zip(parsed.polygons, parsed.names, parsed.difficult):
                where = f"{lp.name}:{name}"
                if name not in cls_to_label:
                    report.add("unknown_categories", f"{lp.name} class {name!r}")
                    continue
                box = _check_polygon(poly, w, h, where, report)
                if box is not None:
                    objs.append((poly, box, cls_to_label[name], diff != 0))
        records.append(_record(img, w, h, len(records), objs))
    ds = DetectionDataset(records=records, class_names=list(class_names), cat_ids=list(range(len(class_names))),
                          root=str(images_dir))
    return finish(ds, report, strict)


DOTA_LABEL_DIRS = ("annfiles", "labelTxt")  # mmrotate's split tool / the original DOTA release


def _dota_pair(folder: Path) -> tuple[Path, Path] | None:
    if not (folder / "images").is_dir():
        return None
    labels = next((folder / d for d in DOTA_LABEL_DIRS if (folder / d).is_dir()), None)
    return None if labels is None else (folder / "images", labels)


def find_dota_split(root: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """(images, labels) folders of split ``split`` of a DOTA-layout folder, or None when ``root``
    is none: ``root/<split>/images`` + ``root/<split>/{annfiles,labelTxt}`` (DOTA's
    ``train/``, ``val/``, mmrotate's ``split_ss_dota/trainval/``), else ``root/images`` +
    ``root/{annfiles,labelTxt}`` (a single split, e.g. `rtmdet.data.split.split_images`' output:
    every split name reads it)."""
    root = Path(root)
    return _dota_pair(root / split) or _dota_pair(root)


def is_dota_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` has the DOTA layout for some split (see `find_dota_split`)."""
    root = Path(root)
    return root.is_dir() and (_dota_pair(root) is not None
                              or any(_dota_pair(d) is not None for d in root.iterdir() if d.is_dir()))


def load_dota_folder(root: str | os.PathLike, split: str = "val", strict: bool = False) -> DetectionDataset:
    """`load_dota` on split ``split`` of a DOTA-layout folder (`find_dota_split`). Class names:
    ``root/classes.txt`` (one per line, label = line index) when present, else DOTA v1.0's."""
    root = Path(root)
    pair = find_dota_split(root, split)
    if pair is None:
        raise FileNotFoundError(f"{root}: no DOTA split {split!r} (looked for {split}/images + "
                                f"{split}/annfiles or labelTxt, and images/ + annfiles/ or labelTxt/)")
    names_file = root / "classes.txt"
    names = DOTA_V1_CLASSES
    if names_file.is_file():
        names = tuple(ln.strip() for ln in names_file.read_text().splitlines() if ln.strip())
    return load_dota(*pair, class_names=names, strict=strict)


def _fmt(v: float) -> str:
    """Shortest text that reads back as the same float32 (e.g. '1054', '12.5')."""
    return np.format_float_positional(np.float32(v), trim="-")


def save_dota_txt(
    path: str | os.PathLike,
    polygons: np.ndarray,
    class_names: Sequence[str],
    labels: np.ndarray,
    difficult: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> None:
    """Write one DOTA txt: ``x1 y1 ... y4 class difficult`` per object (difficult default 0).

    With ``scores`` (detections) the last column is the score instead of the difficult flag.
    An empty ``polygons`` writes an empty file (an image without objects).
    """
    polys = np.asarray(polygons, np.float64).reshape(-1, 8)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(polys):
        raise ValueError(f"{len(polys)} polygons but {len(labels)} labels")
    if difficult is not None and scores is not None:
        raise ValueError("give difficult or scores, not both")
    if scores is not None:
        last = [f"{float(s):.6g}" for s in np.asarray(scores).reshape(-1)]
    else:
        diff = np.zeros(len(polys), int) if difficult is None else np.asarray(difficult).reshape(-1)
        last = [str(int(d)) for d in diff]
    if len(last) != len(polys):
        raise ValueError(f"{len(polys)} polygons but {len(last)} difficult/score values")
    lines = [" ".join(_fmt(v) for v in p) + f" {class_names[int(c)]} {t}\n" for p, c, t in zip(polys, labels, last)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(lines))


# ------------------------------------------------------------------------------------- YOLO-OBB


def load_yolo_obb(root_or_yaml: str | os.PathLike, split: str = "val", strict: bool = False) -> DetectionDataset:
    """Read an ultralytics YOLO-OBB dataset: per image a txt of ``cls x1 y1 x2 y2 x3 y3 x4 y4``
    (corners normalised to 0..1 by the image size), found as `load_yolo` finds them (a yaml with
    ``names`` and split entries, or ``images/<split>`` + ``labels/<split>`` (+ ``classes.txt``)).

    An image without a label file is a background image (ultralytics). Polygons come back in
    absolute pixels; validation as in `load_dota` (ultralytics would instead drop the whole image
    when a corner is outside 0..1; here such polygons are kept and noted). ``difficult`` is all False.
    """
    src, root, images, names = find_split(root_or_yaml, split)
    report = PolygonLoadReport(source=str(src))
    parsed = []
    max_cls = -1
    for img, w, h, lines in labelled_images(images, report):
        objs = []
        for where, cls_f, nums, _ in lines:
            if len(nums) != 8 or not math.isfinite(cls_f) or cls_f != int(cls_f):
                report.add("malformed_annotations", where)
                continue
            cls = class_index(cls_f, names, where, report)
            if cls is None:
                continue
            poly = np.array(nums, np.float64) * np.array([w, h] * 4, np.float64)
            box = _check_polygon(poly, w, h, where, report)
            if box is not None:
                max_cls = max(max_cls, cls)
                objs.append((poly, box, cls, False))
        parsed.append((img, w, h, objs))
    if names is None:
        names = [f"class{i}" for i in range(max_cls + 1)]
    records = [_record(img, w, h, i, objs) for i, (img, w, h, objs) in enumerate(parsed)]
    ds = DetectionDataset(records=records, class_names=names, cat_ids=list(range(len(names))), root=str(root))
    return finish(ds, report, strict)
