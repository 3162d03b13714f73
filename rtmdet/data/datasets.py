"""Dataset readers: COCO json and YOLO txt into the shared `DetectionDataset` form.

Every reader validates what it loads. Nothing is changed silently: boxes that are skipped or
clipped, images that are missing, and category ids that are unknown are counted in a `LoadReport`
(attached as ``dataset.report`` and logged as one line). ``strict=True`` turns any problem into a
``ValueError`` that lists them.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .records import DetectionDataset, ImageRecord

__all__ = ["LoadReport", "load_coco", "load_yolo", "load_dataset", "read_image_size", "IMG_EXTS"]

log = logging.getLogger(__name__)

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
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


def _finish(ds: DetectionDataset, report: LoadReport, strict: bool) -> DetectionDataset:
    report.num_images = len(ds.records)
    report.num_annotations = int(sum(len(r.boxes) for r in ds.records))
    if strict and not report.ok:
        raise ValueError(f"{report.source}: dataset has problems (strict=True):\n  " + "\n  ".join(report.problems()))
    (log.info if report.ok else log.warning)(report.summary())
    ds.report = report
    return ds


def read_image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding pixels; None if unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        if w > 0 and h > 0:
            return int(w), int(h)
    except Exception:
        pass
    try:  # formats PIL does not know: fall back to a full decode
        import cv2

        im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if im is not None and im.size:
            return int(im.shape[1]), int(im.shape[0])
    except Exception:
        pass
    return None


def _clip_box(x1, y1, x2, y2, w, h):
    """Clip an xyxy box to [0,w]x[0,h]; return (box, was_clipped) or (None, _) if nothing is left."""
    cx1, cy1 = min(max(x1, 0.0), w), min(max(y1, 0.0), h)
    cx2, cy2 = min(max(x2, 0.0), w), min(max(y2, 0.0), h)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, True
    return (cx1, cy1, cx2, cy2), (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None
    if not text.strip():
        raise ValueError(f"{path}: annotation file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


# ----------------------------------------------------------------------------------------- COCO


def load_coco(
    ann_file: str | os.PathLike,
    img_dir: str | os.PathLike | None = None,
    strict: bool = False,
    check_images: bool = True,
) -> DetectionDataset:
    """Read a COCO instances json.

    ``img_dir``: folder the ``file_name`` entries are relative to (default: the json's folder).
    ``check_images``: skip (and report) images whose file does not exist; sizes come from the json,
    and only images without width/height have their header read.
    """
    ann_file = Path(ann_file)
    img_dir = Path(img_dir) if img_dir is not None else ann_file.parent
    data = _read_json(ann_file)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{ann_file}: not a COCO annotation file (expected an object with 'images')")
    if not data["images"]:
        raise ValueError(f"{ann_file}: annotation file lists no images")
    report = LoadReport(source=str(ann_file))

    cats = sorted(data.get("categories") or [], key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    if len(set(cat_ids)) != len(cat_ids):
        raise ValueError(f"{ann_file}: duplicate category ids in 'categories'")
    class_names = [str(c.get("name", c["id"])) for c in cats]
    cat_to_label = {c: i for i, c in enumerate(cat_ids)}

    images: dict[int, dict] = {}
    order: list[int] = []
    for im in data["images"]:
        iid = im.get("id")
        if iid in images:
            report.add("duplicate_image_ids", f"id {iid} ({im.get('file_name')})")
            continue
        path = (img_dir / str(im.get("file_name", ""))).absolute()
        w, h = im.get("width"), im.get("height")
        if check_images and not path.is_file():
            report.add("missing_images", str(path))
            images[iid] = None  # known id, but skipped: its annotations are not orphans
            continue
        if not w or not h:
            size = read_image_size(path)
            if size is None:
                report.add("unreadable_images", str(path))
                images[iid] = None
                continue
            w, h = size
        images[iid] = {"path": str(path), "width": int(w), "height": int(h), "anns": []}
        order.append(iid)

    has_segm = False
    for ann in data.get("annotations") or []:
        iid = ann.get("image_id")
        if iid not in images:
            report.add("orphan_annotations", f"ann {ann.get('id')} -> image {iid}")
            continue
        im = images[iid]
        if im is None:
            continue  # image skipped (already reported)
        if ann.get("category_id") not in cat_to_label:
            report.add("unknown_categories", f"ann {ann.get('id')} category {ann.get('category_id')}")
            continue
        bb = ann.get("bbox")
        try:
            x, y, bw, bh = (float(v) for v in bb)
        except Exception:
            report.add("malformed_annotations", f"ann {ann.get('id')} bbox {bb!r}")
            continue
        if not all(math.isfinite(v) for v in (x, y, bw, bh)) or bw <= 0 or bh <= 0:
            report.add("degenerate_boxes", f"ann {ann.get('id')} bbox {bb}")
            continue
        box, clipped = _clip_box(x, y, x + bw, y + bh, im["width"], im["height"])
        if box is None:
            report.add("degenerate_boxes", f"ann {ann.get('id')} bbox {bb} outside {im['width']}x{im['height']}")
            continue
        if clipped:
            report.add("clipped_boxes", f"ann {ann.get('id')} bbox {bb} in {im['width']}x{im['height']}")
        seg = ann.get("segmentation")
        if seg:
            has_segm = True
        area = ann.get("area")
        im["anns"].append((box, cat_to_label[ann["category_id"]], bool(ann.get("iscrowd", 0)), seg or [],
                           float(area) if area is not None else bw * bh))

    records = []
    for iid in order:
        im = images[iid]
        anns = im["anns"]
        n = len(anns)
        records.append(
            ImageRecord(
                path=im["path"],
                width=im["width"],
                height=im["height"],
                image_id=iid,
                boxes=np.array([a[0] for a in anns], np.float32).reshape(n, 4),
                labels=np.array([a[1] for a in anns], np.int64).reshape(n),
                iscrowd=np.array([a[2] for a in anns], bool).reshape(n),
                segmentations=[a[3] for a in anns] if has_segm else None,
                areas=np.array([a[4] for a in anns], np.float64).reshape(n),
            )
        )
    ds = DetectionDataset(records=records, class_names=class_names, cat_ids=cat_ids, root=str(img_dir))
    return _finish(ds, report, strict)


# ----------------------------------------------------------------------------------------- YOLO


def _load_yaml(path: Path) -> dict:
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


def _names_list(names, src) -> list[str]:
    if isinstance(names, dict):
        by_int = {int(k): v for k, v in names.items()}
        keys = sorted(by_int)
        if keys != list(range(len(keys))):
            raise ValueError(f"{src}: 'names' keys must be 0..C-1, got {keys}")
        return [str(by_int[k]) for k in keys]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    raise ValueError(f"{src}: 'names' must be a list or a dict, got {type(names).__name__}")


def _list_images(entry, base: Path, src) -> list[Path]:
    """Images from a yaml split entry: a folder, a .txt list of paths, or a list of those."""
    if isinstance(entry, (list, tuple)):
        return [p for e in entry for p in _list_images(e, base, src)]
    p = Path(str(entry))
    p = p if p.is_absolute() else base / p
    if p.is_dir():
        return sorted(q for q in p.rglob("*") if q.suffix.lower() in IMG_EXTS)
    if p.is_file() and p.suffix == ".txt":
        out = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                q = Path(line)
                out.append(q if q.is_absolute() else (p.parent / q if line.startswith(".") else base / q))
        return out
    if p.is_file() and p.suffix.lower() in IMG_EXTS:
        return [p]
    raise FileNotFoundError(f"{src}: split entry {entry!r} not found (looked for {p})")


def _label_path(img: Path) -> Path:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):  # the last 'images' component becomes 'labels'
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return img.with_suffix(".txt")


def load_yolo(root_or_yaml: str | os.PathLike, split: str = "val", strict: bool = False) -> DetectionDataset:
    """Read a YOLO txt dataset (ultralytics layout).

    ``root_or_yaml``: a dataset yaml (``path``, ``train``, ``val``, ``names`` as a list or dict), or
    a folder that holds such a yaml, or a folder with ``images/<split>`` (or ``images/``) and a
    matching ``labels/`` tree plus ``classes.txt``/a yaml for the names.
    Label lines are ``cls cx cy w h`` (normalized), or ``cls x1 y1 x2 y2 ...`` (normalized polygon;
    the box is its bounds and the polygon is kept as the segmentation).
    """
    src = Path(root_or_yaml)
    names: list[str] | None = None
    if src.is_dir():
        yamls = sorted(list(src.glob("*.yaml")) + list(src.glob("*.yml")))
        if yamls:
            src = yamls[0]
    if src.is_file():
        cfg = _load_yaml(src)
        base = Path(cfg.get("path") or ".")
        base = base if base.is_absolute() else (src.parent / base)
        if "names" not in cfg:
            raise ValueError(f"{src}: no 'names' entry")
        names = _names_list(cfg["names"], src)
        if split not in cfg or cfg[split] is None:
            raise ValueError(f"{src}: no '{split}' split (has {[k for k in cfg if k not in ('path', 'names', 'nc')]})")
        images = _list_images(cfg[split], base, src)
        root = base
    elif src.is_dir():
        root = src
        for cand in (src / "images" / split, src / split / "images", src / "images"):
            if cand.is_dir():
                images = _list_images(cand, src, src)
                break
        else:
            raise FileNotFoundError(f"{src}: no dataset yaml and no images/{split} or images/ folder")
        if (src / "classes.txt").is_file():
            names = [ln.strip() for ln in (src / "classes.txt").read_text().splitlines() if ln.strip()]
    else:
        raise FileNotFoundError(f"YOLO dataset not found: {src}")

    report = LoadReport(source=str(src))
    parsed = []  # (path, w, h, [(box, label, poly)])
    max_cls = -1
    has_segm = False
    for img in images:
        if not img.is_file():
            report.add("missing_images", str(img))
            continue
        size = read_image_size(img)
        if size is None:
            report.add("unreadable_images", str(img))
            continue
        w, h = size
        anns = []
        lp = _label_path(img)
        lines = lp.read_text().splitlines() if lp.is_file() else []  # no label file: a background image
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
            if cls_f != int(cls_f) or not (len(nums) == 4 or (len(nums) >= 6 and len(nums) % 2 == 0)):
                report.add("malformed_annotations", where)
                continue
            if not all(math.isfinite(v) for v in nums):
                report.add("degenerate_boxes", where)
                continue
            cls = int(cls_f)
            if cls < 0 or (names is not None and cls >= len(names)):
                report.add("unknown_categories", f"{where} class {cls}")
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
            box, clipped = _clip_box(float(x1), float(y1), float(x2), float(y2), w, h)
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
        n = len(anns)
        records.append(
            ImageRecord(
                path=str(Path(img).absolute()),
                width=w,
                height=h,
                image_id=i,
                boxes=np.array([a[0] for a in anns], np.float32).reshape(n, 4),
                labels=np.array([a[1] for a in anns], np.int64).reshape(n),
                iscrowd=np.zeros(n, bool),
                segmentations=[[a[2]] if a[2] else [] for a in anns] if has_segm else None,
            )
        )
    ds = DetectionDataset(records=records, class_names=names, cat_ids=list(range(len(names))), root=str(root))
    return _finish(ds, report, strict)


# ----------------------------------------------------------------------------------------- auto


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


def load_dataset(path: str | os.PathLike, split: str = "val", strict: bool = False, **kw) -> DetectionDataset:
    """Open a dataset in whatever form it has.

    - a ``.json`` file: COCO (images looked up next to it, see `_coco_img_dir`);
    - a ``.yaml``/``.yml`` file: YOLO;
    - a folder with ``annotations/instances_<split>*.json``: COCO;
    - a folder with a yaml or ``images/`` + ``labels/``: YOLO.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".json":
            return load_coco(p, kw.pop("img_dir", None) or _coco_img_dir(p, split), strict=strict, **kw)
        if p.suffix.lower() in (".yaml", ".yml"):
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
        return load_yolo(p, split=split, strict=strict)
    raise ValueError(
        f"{p}: cannot tell the dataset format (no annotations/instances_{split}*.json, no yaml, no labels/ folder)"
    )
