"""COCO instances json -> `DetectionDataset`, validated (see `rtmdet.data.report`)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .files import read_image_size
from .records import DetectionDataset, ImageRecord
from .report import LoadReport, clip_box, finish

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
        box, clipped = clip_box(x, y, x + bw, y + bh, im["width"], im["height"])
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
    return finish(ds, report, strict)
