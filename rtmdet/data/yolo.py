"""YOLO txt datasets (ultralytics layout) -> `DetectionDataset`, validated (see `rtmdet.data.report`).

The helpers that find a split's images, each image's label file and the class names of a data yaml
are public: readers of YOLO-like layouts (e.g. YOLO-OBB) reuse them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .files import has_image_suffix, list_images
from .records import DetectionDataset, ImageRecord
from .report import ROUNDING_PX, LoadReport, clip_box, finish, image_size, log

__all__ = ["load_yolo", "find_split", "read_data_yaml", "class_names", "split_images", "label_path",
           "read_label_lines", "labelled_images"]


def read_data_yaml(path: Path) -> dict:
    """A dataset yaml as a dict; a missing, empty or malformed file is a one-line error."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset yaml not found: {path}") from None
    if not text.strip():
        raise ValueError(f"{path}: dataset yaml is empty")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping with 'names' and split entries")
    return cfg


def class_names(names, src) -> list[str]:
    """A yaml ``names`` entry (a list, or a dict keyed 0..C-1) as a list; ``src`` names the file in errors."""
    if isinstance(names, dict):
        by_int = {int(k): v for k, v in names.items()}
        keys = sorted(by_int)
        if keys != list(range(len(keys))):
            raise ValueError(f"{src}: 'names' keys must be 0..C-1, got {keys}")
        return [str(by_int[k]) for k in keys]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    raise ValueError(f"{src}: 'names' must be a list or a dict, got {type(names).__name__}")


def split_images(entry, base: Path, src) -> list[Path]:
    """Images from a yaml split entry: a folder, a .txt list of paths, or a list of those
    (relative paths are taken from ``base``; ``src`` names the yaml in errors)."""
    if isinstance(entry, (list, tuple)):
        return [p for e in entry for p in split_images(e, base, src)]
    p = Path(str(entry))
    p = p if p.is_absolute() else base / p
    if p.is_dir():
        return list_images(p)
    if p.is_file() and p.suffix == ".txt":
        out = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                q = Path(line)
                out.append(q if q.is_absolute() else (p.parent / q if line.startswith(".") else base / q))
        return out
    if p.is_file() and has_image_suffix(p):
        return [p]
    raise FileNotFoundError(f"{src}: split entry {entry!r} not found (looked for {p})")


def label_path(img: Path) -> Path:
    """The label file of an image: the last ``images`` folder of its path becomes ``labels``
    and the suffix ``.txt`` (next to the image when the path has no ``images`` folder)."""
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):  # the last 'images' component becomes 'labels'
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return img.with_suffix(".txt")


def read_label_lines(lp: Path, report: LoadReport) -> Iterator[tuple[str, float, list[float], str]]:
    """The lines of a YOLO label file as ``(where, class (a float), numbers, line)``, ``where``
    being ``name:line_no`` for reports. Blank lines are skipped; lines with a field that is not a
    number are reported as malformed and skipped. A missing file has none (a background image)."""
    lines = lp.read_text().splitlines() if lp.is_file() else []
    for ln_no, line in enumerate(lines, 1):
        vals = line.split()
        if not vals:
            continue
        where = f"{lp.name}:{ln_no}"
        try:
            cls_f = float(vals[0])
            nums = [float(v) for v in vals[1:]]
        except ValueError:
            report.add("malformed_annotations", where)
            continue
        yield where, cls_f, nums, line


def labelled_images(images: list[Path], report: LoadReport):
    """``(image, width, height, its label lines)`` for each image of a split that exists and reads
    (the others are reported); the lines as `read_label_lines` gives them."""
    for img in images:
        size = image_size(img, report)
        if size is not None:
            yield img, size[0], size[1], read_label_lines(label_path(img), report)


def find_split(root_or_yaml: str | os.PathLike, split: str) -> tuple[Path, Path, list[Path], list[str] | None]:
    """Where a YOLO-layout split is: ``(source, root, image paths, class names or None)``.

    ``root_or_yaml``: a dataset yaml (``path``, ``train``, ``val``, ``names`` as a list or dict), or
    a folder that holds such a yaml, or a folder with ``images/<split>`` (or ``<split>/images``,
    ``images/``) plus ``classes.txt`` for the names. ``source`` is the yaml read, else the folder;
    image paths may name missing files (the reader reports them). Each image's labels are at
    `label_path`.
    """
    src = Path(root_or_yaml)
    names: list[str] | None = None
    if src.is_dir():
        yamls = sorted(list(src.glob("*.yaml")) + list(src.glob("*.yml")))
        if yamls:
            src = yamls[0]
    if src.is_file():
        cfg = read_data_yaml(src)
        base = Path(cfg.get("path") or ".")
        base = base if base.is_absolute() else (src.parent / base)
        if "names" not in cfg:
            raise ValueError(f"{src}: no 'names' entry")
        names = class_names(cfg["names"], src)
        if split not in cfg or cfg[split] is None:
            raise ValueError(f"{src}: no '{split}' split (has {[k for k in cfg if k not in ('path', 'names', 'nc')]})")
        images = split_images(cfg[split], base, src)
        root = base
    elif src.is_dir():
        root = src
        for cand in (src / "images" / split, src / split / "images", src / "images"):
            if cand.is_dir():
                images = split_images(cand.absolute(), src, src)
                break
        else:
            raise FileNotFoundError(f"{src}: no dataset yaml and no images/{split} or images/ folder")
        if (src / "classes.txt").is_file():
            names = [ln.strip() for ln in (src / "classes.txt").read_text().splitlines() if ln.strip()]
    else:
        raise FileNotFoundError(f"YOLO dataset not found: {src}")
    return src, root, images, names


def class_index(cls_f: float, names, where: str, report) -> int | None:
    """The class of a label line, or None (counted in `report`) when it is no known index."""
    cls = int(cls_f)
    if cls < 0 or (names is not None and cls >= len(names)):
        report.add("unknown_categories", f"{where} class {cls}")
        return None
    return cls


def load_yolo(root_or_yaml: str | os.PathLike, split: str = "val", strict: bool = False) -> DetectionDataset:
    """Read a YOLO txt dataset (ultralytics layout).

    ``root_or_yaml``: a dataset yaml (``path``, ``train``, ``val``, ``names`` as a list or dict), or
    a folder that holds such a yaml, or a folder with ``images/<split>`` (or ``images/``) and a
    matching ``labels/`` tree plus ``classes.txt``/a yaml for the names.
    Label lines are ``cls cx cy w h`` (normalized), or ``cls x1 y1 x2 y2 ...`` (normalized polygon;
    the box is its bounds and the polygon is kept as the segmentation).
    """
    src, root, images, names = find_split(root_or_yaml, split)
    report = LoadReport(source=str(src))
    parsed = []  # (path, w, h, [(box, label, poly)])
    max_cls = -1
    has_segm = False
    for img, w, h, lines in labelled_images(images, report):
        anns = []
        for where, cls_f, nums, line in lines:
            if cls_f != int(cls_f) or not (len(nums) == 4 or (len(nums) >= 6 and len(nums) % 2 == 0)):
                report.add("malformed_annotations", where)
                continue
            if not all(math.isfinite(v) for v in nums):
                report.add("degenerate_boxes", where)
                continue
            cls = class_index(cls_f, names, where, report)
            if cls is None:
                continue
            poly = None
            if len(nums) == 4:
                cx, cy, bw, bh = nums
                x1, y1, x2, y2 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
            else:
                xs, ys = np.array(nums[0::2]) * w, np.array(nums[1::2]) * h
                x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
                poly = [float(v) for xy in zip(np.clip(xs, 0, w), np.clip(ys, 0, h)) for v in xy]
                has_segm = True
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                report.add("degenerate_boxes", f"{where} {line.strip()}")
                continue
            box, clipped = clip_box(float(x1), float(y1), float(x2), float(y2), w, h, tol=ROUNDING_PX)
            if box is None:
                report.add("degenerate_boxes", f"{where} outside the image")
                continue
            if clipped:
                report.add("clipped_boxes", where)
            max_cls = max(max_cls, cls)
            anns.append((box, cls, poly))
        parsed.append((img, w, h, anns))

    if names is None:
        names = [f"class{i}" for i in range(max_cls + 1)]
        log.warning("%s: no class names found (no yaml / classes.txt); using %d generic names", src, len(names))

    records = []
    for i, (img, w, h, anns) in enumerate(parsed):
        records.append(ImageRecord.build(
            img, w, h, i, [a[0] for a in anns], [a[1] for a in anns],
            segmentations=[[a[2]] if a[2] else [] for a in anns] if has_segm else None))
    ds = DetectionDataset(records=records, class_names=names, cat_ids=list(range(len(names))), root=str(root))
    return finish(ds, report, strict)
