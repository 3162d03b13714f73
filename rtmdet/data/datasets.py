"""Dataset readers, one import away: `load_dataset` tells the format (COCO json, YOLO txt, DOTA
txt or YOLO-OBB txt) and calls the reader (`rtmdet.data.coco.load_coco`,
`rtmdet.data.yolo.load_yolo`, `rtmdet.data.dota.load_dota_folder`, `rtmdet.data.dota.load_yolo_obb`).

Every reader validates what it loads and says what it skipped or fixed in a `LoadReport`
(`rtmdet.data.report`); ``strict=True`` turns any problem into a ``ValueError``.
"""
from __future__ import annotations

import os
from pathlib import Path

from .coco import load_coco
from .dota import is_dota_folder, load_dota, load_dota_folder, load_yolo_obb
from .files import IMG_EXTS, read_image_size
from .records import DetectionDataset
from .report import LoadReport, log
from .yolo import find_split, label_path, load_yolo

__all__ = ["LoadReport", "load_coco", "load_yolo", "load_dota", "load_dota_folder", "load_yolo_obb",
           "load_dataset", "is_yolo_obb", "read_image_size", "IMG_EXTS"]


def _coco_img_dir(ann_file: Path, split: str | None) -> Path:
    """Guess the image folder for a COCO json (root/annotations/instances_<x>.json -> root/<x>, ...)."""
    stem = ann_file.stem
    tag = stem[len("instances_"):] if stem.startswith("instances_") else stem
    root = ann_file.parent.parent if ann_file.parent.name == "annotations" else ann_file.parent
    tags = [t for t in dict.fromkeys([tag, split]) if t]
    cands = [root / t for t in tags] + [root / "images" / t for t in tags] + [root / "images", root]
    for c in cands:
        if c.is_dir():
            return c
    return root


def is_yolo_obb(path: str | os.PathLike, split: str, max_files: int = 20) -> bool:
    """Whether a YOLO-layout dataset holds oriented boxes: every line of its first non-empty
    label files (up to `max_files`) is ``cls x1 y1 x2 y2 x3 y3 x4 y4`` (9 fields)."""
    try:
        _, _, images, _ = find_split(path, split)
    except (FileNotFoundError, ValueError):
        return False
    seen = 0
    for img in images:
        lp = label_path(img)
        if not lp.is_file():
            continue
        rows = [ln.split() for ln in lp.read_text(errors="replace").splitlines() if ln.strip()]
        if not rows:
            continue
        if any(len(r) != 9 for r in rows):
            return False
        seen += 1
        if seen >= max_files:
            break
    return seen > 0


KINDS = ("boxes", "rotated")


def load_dataset(path: str | os.PathLike, split: str = "val", strict: bool = False, kind: str = "boxes",
                 **kw) -> DetectionDataset:
    """Open a dataset in whatever form it has.

    - a folder with the DOTA layout (``<split>/images`` + ``<split>/annfiles`` or ``labelTxt``,
      see `rtmdet.data.dota.find_dota_split`): DOTA txt, whatever ``kind``;
    - ``kind="rotated"`` (what a rotated-box model trains on, `TaskFamily.dataset_kind`):
      otherwise YOLO-OBB (a yaml or a YOLO folder whose lines are ``cls x1 y1 ... x4 y4``);
    - a ``.json`` file: COCO (images looked up next to it, see `_coco_img_dir`);
    - a ``.yaml``/``.yml`` file: YOLO;
    - a folder with ``annotations/instances_<split>*.json``: COCO;
    - a folder with ``images/`` + ``labelTxt/`` or ``annfiles/`` (also under ``<split>/``): DOTA
      (DOTA v1.0 classes unless ``class_names`` is given);
    - a folder with a yaml or ``images/`` + ``labels/``: YOLO, or YOLO-OBB when its label lines
      are ``cls x1 y1 ... x4 y4`` (`is_yolo_obb`).
    """
    if kind not in KINDS:
        raise ValueError(f"dataset kind must be one of {KINDS}, got {kind!r}")
    p = Path(path)
    if is_dota_folder(p):
        return load_dota_folder(p, split, strict=strict)
    if kind == "rotated":
        if p.is_file() and p.suffix.lower() not in (".yaml", ".yml"):
            raise ValueError(f"{p}: a rotated-box dataset is a DOTA folder or a YOLO-OBB yaml/folder")
        return load_yolo_obb(p, split=split, strict=strict)
    if p.is_file():
        if p.suffix.lower() == ".json":
            return load_coco(p, kw.pop("img_dir", None) or _coco_img_dir(p, split), strict=strict, **kw)
        if p.suffix.lower() in (".yaml", ".yml"):
            if is_yolo_obb(p, split):
                return load_yolo_obb(p, split=split, strict=strict)
            return load_yolo(p, split=split, strict=strict)
        raise ValueError(f"{p}: unknown dataset file type (expected .json or .yaml)")
    if not p.is_dir():
        raise FileNotFoundError(f"dataset not found: {p}")
    anns = sorted((p / "annotations").glob(f"instances_{split}*.json")) if (p / "annotations").is_dir() else []
    if anns:
        if len(anns) > 1:
            log.info("%s: several annotation files for split %r, using %s", p, split, anns[0].name)
        return load_coco(anns[0], kw.pop("img_dir", None) or _coco_img_dir(anns[0], split), strict=strict, **kw)
    if list(p.glob("*.yaml")) + list(p.glob("*.yml")) or (p / "labels").is_dir():
        if is_yolo_obb(p, split):
            return load_yolo_obb(p, split=split, strict=strict)
        return load_yolo(p, split=split, strict=strict)
    raise ValueError(
        f"{p}: cannot tell the dataset format (no annotations/instances_{split}*.json, no yaml, "
        "no labels/ folder, no images/ + labelTxt/ or annfiles/)"
    )
