"""A generated COCO-format dataset of coloured shapes, for tests and smoke training.

Each image has a textured, noisy background and a few filled shapes of random size and colour that
may overlap a little. Every shape is annotated with its box and the exact polygon that was drawn
(so instance segmentation can use it). The output is deterministic for a seed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = ["SHAPES", "background", "size_sampler", "make_shapes_dataset", "make_shapes_splits"]


def _regular(n, start=0.0):
    def make(rng, cx, cy, rx, ry):
        a0 = start + rng.uniform(-0.3, 0.3)
        t = a0 + np.arange(n) * 2 * np.pi / n
        return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)

    return make


def _rectangle(rng, cx, cy, rx, ry):
    return np.array([[cx - rx, cy - ry], [cx + rx, cy - ry], [cx + rx, cy + ry], [cx - rx, cy + ry]])


def _ellipse(rng, cx, cy, rx, ry):
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _circle(rng, cx, cy, rx, ry):
    r = min(rx, ry)
    return _ellipse(rng, cx, cy, r, r)


def _star(rng, cx, cy, rx, ry):
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    k = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([cx + rx * k * np.cos(t), cy + ry * k * np.sin(t)], 1)


# name -> function(rng, cx, cy, rx, ry) -> (n,2) polygon vertices
SHAPES = {
    "rectangle": _rectangle,
    "ellipse": _ellipse,
    "circle": _circle,
    "triangle": _regular(3, -np.pi / 2),
    "diamond": _regular(4, 0.0),
    "pentagon": _regular(5, -np.pi / 2),
    "hexagon": _regular(6, 0.0),
    "star": _star,
}


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour field + stripes/blobs + pixel noise."""
    small = rng.integers(0, 256, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    for _ in range(rng.integers(0, 6)):  # faint clutter lines
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, col, int(rng.integers(1, 4)))
    img += rng.normal(0, rng.uniform(3, 15), (h, w, 1)).astype(np.int16)  # luminance noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def size_sampler(image_size):
    """int -> square; (h, w) -> fixed; ((h0, h1), (w0, w1)) -> uniform in those ranges."""
    if isinstance(image_size, int):
        return lambda rng: (image_size, image_size)
    h, w = image_size
    if isinstance(h, (tuple, list)):
        return lambda rng: (int(rng.integers(h[0], h[1] + 1)), int(rng.integers(w[0], w[1] + 1)))
    return lambda rng: (int(h), int(w))


def make_shapes_dataset(
    out_dir: str | os.PathLike,
    num_images: int = 64,
    image_size=(320, 320),
    classes: Sequence[str] = ("rectangle", "ellipse", "triangle"),
    seed: int = 0,
    split: str = "train",
    objects_per_image: tuple[int, int] = (1, 6),
    scale_range: tuple[float, float] = (0.06, 0.4),
    max_overlap: float = 0.3,
    empty_fraction: float = 0.0,
    ext: str = ".jpg",
) -> Path:
    """Write ``out_dir/images/<split>/*.jpg`` and ``out_dir/annotations/instances_<split>.json``.

    ``image_size``: int, ``(h, w)`` or ``((h_min, h_max), (w_min, w_max))``.
    ``scale_range``: object size as a fraction of the shorter image side.
    ``max_overlap``: largest box IoU allowed between two objects of one image.
    ``empty_fraction``: share of images drawn without any object (background only).
    Returns the annotation json path.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape classes {unknown}; available: {sorted(SHAPES)}")
    if ext not in (".jpg", ".png"):
        raise ValueError("ext must be '.jpg' or '.png'")
    out_dir = Path(out_dir)
    img_dir = out_dir / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sample_size = size_sampler(image_size)
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(classes)]
    images, annotations = [], []
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for i in range(num_images):
        h, w = sample_size(rng)
        img = background(rng, h, w)
        n_obj = 0 if rng.random() < empty_fraction else int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        boxes: list[tuple[float, float, float, float]] = []
        short = min(h, w)
        for _ in range(n_obj):
            for _attempt in range(20):
                c = int(rng.integers(len(classes)))
                s = rng.uniform(*scale_range) * short
                rx, ry = s / 2 * rng.uniform(0.6, 1.0), s / 2 * rng.uniform(0.6, 1.0)
                if rx < 3 or ry < 3:
                    continue
                cx, cy = rng.uniform(rx, w - rx), rng.uniform(ry, h - ry)
                poly = SHAPES[classes[c]](rng, cx, cy, rx, ry)
                poly = np.round(np.clip(poly, 0, [w - 1, h - 1]))
                x1, y1 = poly.min(0)
                x2, y2 = poly.max(0) + 1  # pixel-inclusive fill -> half-open box
                box = (float(x1), float(y1), float(x2), float(y2))
                if x2 - x1 < 4 or y2 - y1 < 4 or any(_iou(box, b) > max_overlap for b in boxes):
                    continue
                col = rng.integers(0, 256, 3)
                col[rng.integers(3)] = rng.integers(200, 256)  # keep shapes saturated
                pts = poly.astype(np.int32)
                cv2.fillPoly(img, [pts], tuple(int(v) for v in col), lineType=cv2.LINE_8)
                if rng.random() < 0.5:  # a texture stripe inside some shapes
                    dark = tuple(int(v * 0.6) for v in col)
                    cv2.line(img, (int(x1), int(cy)), (int(x2) - 1, int(cy)), dark, 1)
                    cv2.polylines(img, [pts], True, tuple(int(v) for v in col), 1)
                boxes.append(box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": c + 1,
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "area": float(abs(cv2.contourArea(poly.astype(np.float32)))),
                        "iscrowd": 0,
                        "segmentation": [[float(v) for v in poly.reshape(-1)]],
                    }
                )
                break
        name = f"{i:06d}{ext}"
        cv2.imwrite(str(img_dir / name), img, params)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    ann_file = out_dir / "annotations" / f"instances_{split}.json"
    doc = {
        "info": {"description": f"rtmdet synthetic shapes ({split}, seed {seed})"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    tmp = ann_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, ann_file)
    return ann_file


def make_shapes_splits(
    out_dir: str | os.PathLike, splits: dict[str, int] | None = None, seed: int = 0, **kw
) -> dict[str, Path]:
    """Write several splits (default ``{"train": 64, "val": 16}``) with distinct seeds; split -> json path."""
    splits = splits or {"train": 64, "val": 16}
    return {
        name: make_shapes_dataset(out_dir, num_images=n, seed=seed * 1000 + k, split=name, **kw)
        for k, (name, n) in enumerate(splits.items())
    }
