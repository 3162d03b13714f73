"""COCO instances json -> `DetectionDataset`, validated (see `rtmdet.data.report`)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .files import read_image_size
from .records import DetectionDataset, ImageRecord
from .report import ROUNDING_PX, LoadReport, clip_box, finish

__all__ = ["load_coco"]


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


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), type(v).__name__)


def _objects(data: dict, key: str, ann_file: Path, required: bool) -> list[dict]:
    """`data[key]` checked to be a list of JSON objects (absent/null allowed unless required)."""
    v = data.get(key)
    if v is None and not required:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{ann_file}: '{key}' must be a list of objects, got {_kind(v)}")
    bad = next((i for i, x in enumerate(v) if not isinstance(x, dict)), None)
    if bad is not None:
        raise ValueError(f"{ann_file}: '{key}'[{bad}] must be an object, got {_kind(v[bad])}")
    return v


def _is_id(v, strings: bool = True) -> bool:
    """A COCO id: an integer (or, as pycocotools allows, a string); not a list, float or bool."""
    return (isinstance(v, int) and not isinstance(v, bool)) or (strings and isinstance(v, str))


def _check_ids(ann_file: Path, key: str, entries: list[dict], fields: tuple[str, ...],
               strings: bool = True) -> None:
    for i, e in enumerate(entries):
        for f in fields:
            if f in e and not _is_id(e[f], strings):
                what = "an integer" + (" or a string" if strings else "")
                raise ValueError(f"{ann_file}: '{key}'[{i}] {f} must be {what}, got "
                                 f"{_kind(e[f])} {json.dumps(e[f])[:40]}")


def _size_field(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                         and math.isfinite(v))


def _finite_numbers(xs: list) -> bool:
    """Every element a finite JSON number (int or float, not true/false). Runs once per polygon
    of the dataset: type and finiteness are checked by C-level maps, not a Python loop."""
    return set(map(type, xs)) <= {int, float} and all(map(math.isfinite, xs))


def _segmentation_problem(seg, h: int, w: int) -> str | None:
    """Why a COCO ``segmentation`` is unusable, or None. Usable: polygons (a list of lists of
    finite numbers; a polygon with fewer than 3 points is dropped later, as mmdet drops it) or
    RLE (``counts`` a string or a list of run lengths, ``size`` the image's [height, width])."""
    if isinstance(seg, list):
        if _finite_numbers(seg):
            return "a flat list of numbers; expected a list of polygons [[x1, y1, x2, y2, ...], ...]"
        for poly in seg:
            if not isinstance(poly, list) or not _finite_numbers(poly):
                return "a polygon that is not a list of finite numbers"
        return None
    if isinstance(seg, dict):
        counts, size = seg.get("counts"), seg.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_id(v, strings=False) for v in size)):
            return "an RLE without a [height, width] size"
        if list(size) != [h, w]:
            return f"an RLE of size {size} on a {w}x{h} image"
        if isinstance(counts, list):
            if not all(_is_id(v, strings=False) and v >= 0 for v in counts) or sum(counts) != h * w:
                return "an RLE whose run lengths do not add up to height x width"
            return None
        return None if isinstance(counts, (str, bytes)) else "an RLE without counts"
    return f"{_kind(seg)}, neither polygons nor RLE"


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
    # the structure is checked before it is used: a wrong type is one line naming the field
    image_list = _objects(data, "images", ann_file, required=True)
    if not image_list:
        raise ValueError(f"{ann_file}: annotation file lists no images")
    ann_list = _objects(data, "annotations", ann_file, required=False)
    cat_list = _objects(data, "categories", ann_file, required=False)
    _check_ids(ann_file, "images", image_list, ("id",))
    _check_ids(ann_file, "annotations", ann_list, ("image_id",))
    _check_ids(ann_file, "annotations", ann_list, ("category_id",), strings=False)
    _check_ids(ann_file, "categories", cat_list, ("id",), strings=False)
    if any("id" not in c for c in cat_list):
        raise ValueError(f"{ann_file}: every entry of 'categories' needs an integer 'id'")
    for i, im in enumerate(image_list):
        if "id" not in im:
            raise ValueError(f"{ann_file}: 'images'[{i}] has no 'id'")
        if not isinstance(im.get("file_name", ""), str):
            raise ValueError(f"{ann_file}: 'images'[{i}] file_name must be a string, got "
                             f"{_kind(im['file_name'])}")
        for f in ("width", "height"):
            if not _size_field(im.get(f)):
                raise ValueError(f"{ann_file}: 'images'[{i}] {f} must be a positive number, got "
                                 f"{json.dumps(im[f])[:40]}")
    report = LoadReport(source=str(ann_file))

    cats = sorted(cat_list, key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    if len(set(cat_ids)) != len(cat_ids):
        raise ValueError(f"{ann_file}: duplicate category ids in 'categories'")
    class_names = [str(c.get("name", c["id"])) for c in cats]
    cat_to_label = {c: i for i, c in enumerate(cat_ids)}

    images: dict[int, dict] = {}
    order: list[int] = []
    for im in image_list:
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
    for ann in ann_list:
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
        box, clipped = clip_box(x, y, x + bw, y + bh, im["width"], im["height"], tol=ROUNDING_PX)
        if box is None:
            report.add("degenerate_boxes", f"ann {ann.get('id')} bbox {bb} outside {im['width']}x{im['height']}")
            continue
        if clipped:
            report.add("clipped_boxes", f"ann {ann.get('id')} bbox {bb} in {im['width']}x{im['height']}")
        seg = ann.get("segmentation")
        problem = _segmentation_problem(seg, im["height"], im["width"]) if seg else None
        if problem:  # the box still trains and counts; the instance has no mask (mmdet ignores it)
            report.add("malformed_segmentations", f"ann {ann.get('id')} segmentation is {problem}")
            seg = []
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
    return finish(ds, report, strict)
