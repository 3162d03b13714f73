"""A generated rotated-box dataset (DOTA txt or YOLO-OBB) of rotated shapes, for tests, smoke
training and `rtmdet demo --task rotated`.

Each image has the textured, noisy background of `rtmdet.data.synthetic` and a few filled
shapes at random orientations: rotated rectangles, rotated ellipses and long thin bars. Each
is annotated with its rotated box as a quadrilateral (the exact rectangle drawn; an ellipse's
box is the rectangle its axes span), so the le90 box the loader derives (`poly2obb_le90`) is the
shape's own. Objects of one image overlap at most ``max_overlap`` (rotated IoU) and lie wholly
inside the image. Deterministic for a seed.

Layouts (both read by `rtmdet.data.datasets.load_dataset(..., kind="rotated")`):

- ``"dota"``: ``out/<split>/images/*.png``, ``out/<split>/annfiles/*.txt`` (DOTA txt:
  ``x1 y1 ... x4 y4 class 0``), ``out/classes.txt`` (the class names, label = line index);
- ``"yolo-obb"``: ``out/images/<split>/*.png``, ``out/labels/<split>/*.txt`` (``cls x1 y1 ...
  y4`` normalised by the image size), ``out/data.yaml``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .dota import save_dota_txt
from .synthetic import background, size_sampler

__all__ = ["ROTATED_SHAPES", "make_rotated_shapes_dataset", "make_rotated_shapes_splits", "rbox_corners"]

# name -> aspect-ratio range (long side / short side) of the shape
ROTATED_SHAPES = {
    "rectangle": (1.2, 2.2),
    "ellipse": (1.2, 2.2),
    "bar": (3.0, 5.0),
}
FORMATS = ("dota", "yolo-obb")


def rbox_corners(cx: float, cy: float, w: float, h: float, theta: float) -> np.ndarray:
    """(4, 2) corners of a rotated box (the `rtmdet.ops.rotated.obb2poly` convention: centre +
    R(theta) (+-w/2, +-h/2), positive theta clockwise on screen)."""
    c, s = np.cos(theta), np.sin(theta)
    v1 = np.array([w / 2 * c, w / 2 * s])
    v2 = np.array([-h / 2 * s, h / 2 * c])
    ctr = np.array([cx, cy])
    return np.stack([ctr + v1 + v2, ctr + v1 - v2, ctr - v1 - v2, ctr - v1 + v2])


def _rotated_iou(a: tuple, b: tuple) -> float:
    """IoU of two rotated boxes (cx, cy, w, h, theta) with OpenCV's rectangle intersection."""
    ra = ((a[0], a[1]), (a[2], a[3]), np.degrees(a[4]))
    rb = ((b[0], b[1]), (b[2], b[3]), np.degrees(b[4]))
    kind, pts = cv2.rotatedRectangleIntersection(ra, rb)
    if kind == cv2.INTERSECT_NONE or pts is None or len(pts) < 3:
        return 0.0
    inter = abs(cv2.contourArea(cv2.convexHull(pts)))
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def _draw(img: np.ndarray, kind: str, box: tuple, color: tuple) -> None:
    """Fill the shape, sub-pixel accurate (coordinates in 1/16 px). Annotations count pixel i as
    [i, i + 1] (a flip maps x to W - x); cv2 puts pixel centres at integers, hence the -0.5."""
    cx, cy, w, h, t = box
    cx, cy = cx - 0.5, cy - 0.5
    if kind == "ellipse":
        cv2.ellipse(img, (int(round(cx * 16)), int(round(cy * 16))),
                    (int(round(w / 2 * 16)), int(round(h / 2 * 16))), float(np.degrees(t)), 0, 360,
                    color, -1, cv2.LINE_AA, 4)
    else:
        pts = np.round(rbox_corners(cx, cy, w, h, t) * 16).astype(np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA, 4)
        if kind == "rectangle":  # an inner outline: a texture that shows the orientation
            inner = np.round(rbox_corners(cx, cy, w * 0.6, h * 0.6, t) * 16).astype(np.int32)
            cv2.polylines(img, [inner], True, tuple(int(v * 0.6) for v in color), 1, cv2.LINE_AA, 4)


def make_rotated_shapes_dataset(
    out_dir: str | os.PathLike,
    num_images: int = 64,
    image_size=(256, 256),
    classes: Sequence[str] = ("rectangle", "ellipse", "bar"),
    seed: int = 0,
    split: str = "train",
    objects_per_image: tuple[int, int] = (1, 5),
    scale_range: tuple[float, float] = (0.15, 0.45),
    max_overlap: float = 0.1,
    fmt: str = "dota",
) -> Path:
    """Write split ``split`` of a rotated-shapes dataset under ``out_dir`` (layouts above).

    ``image_size``: int, ``(h, w)`` or ``((h_min, h_max), (w_min, w_max))``.
    ``scale_range``: the long side of an object as a fraction of the shorter image side.
    ``max_overlap``: largest rotated IoU between two objects of one image.
    Returns the folder of the split's label files."""
    unknown = [c for c in classes if c not in ROTATED_SHAPES]
    if unknown:
        raise ValueError(f"unknown rotated shape classes {unknown}; available: {sorted(ROTATED_SHAPES)}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    out_dir = Path(out_dir)
    if fmt == "dota":
        img_dir, lbl_dir = out_dir / split / "images", out_dir / split / "annfiles"
    else:
        img_dir, lbl_dir = out_dir / "images" / split, out_dir / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sample_size = size_sampler(image_size)
    for i in range(num_images):
        h, w = sample_size(rng)
        img = background(rng, h, w)
        boxes: list[tuple] = []
        labels: list[int] = []
        short = min(h, w)
        for _ in range(int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))):
            for _attempt in range(30):
                c = int(rng.integers(len(classes)))
                long_side = rng.uniform(*scale_range) * short
                aspect = rng.uniform(*ROTATED_SHAPES[classes[c]])
                bw, bh = long_side, max(long_side / aspect, 6.0)
                t = rng.uniform(-np.pi / 2, np.pi / 2)
                ex = (abs(bw * np.cos(t)) + abs(bh * np.sin(t))) / 2 + 1  # half hull extents
                ey = (abs(bw * np.sin(t)) + abs(bh * np.cos(t))) / 2 + 1
                if 2 * ex >= w or 2 * ey >= h:
                    continue
                box = (rng.uniform(ex, w - ex), rng.uniform(ey, h - ey), bw, bh, t)
                if any(_rotated_iou(box, b) > max_overlap for b in boxes):
                    continue
                col = rng.integers(0, 256, 3)
                col[rng.integers(3)] = rng.integers(200, 256)  # keep shapes saturated
                _draw(img, classes[c], box, tuple(int(v) for v in col))
                boxes.append(box)
                labels.append(c)
                break
        stem = f"{i:06d}"
        cv2.imwrite(str(img_dir / f"{stem}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        polys = np.array([rbox_corners(*b).reshape(-1) for b in boxes], np.float64).reshape(-1, 8)
        if fmt == "dota":
            save_dota_txt(lbl_dir / f"{stem}.txt", polys, list(classes), np.array(labels, np.int64))
        else:
            norm = polys / np.array([w, h] * 4, np.float64)
            lines = [f"{lab} " + " ".join(f"{v:.6f}" for v in p) + "\n" for lab, p in zip(labels, norm)]
            (lbl_dir / f"{stem}.txt").write_text("".join(lines))
    if fmt == "dota":
        (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    else:
        yaml = out_dir / "data.yaml"
        splits = {}
        if yaml.is_file():  # keep the splits written before
            for line in yaml.read_text().splitlines():
                k, _, v = line.partition(":")
                if k.strip() not in ("path", "names", "") and not line.startswith(" "):
                    splits[k.strip()] = v.strip()
        splits[split] = f"images/{split}"
        body = "".join(f"{k}: {v}\n" for k, v in splits.items())
        yaml.write_text("path: .\n" + body + "names:\n" + "".join(f"  {k}: {c}\n" for k, c in enumerate(classes)))
    return lbl_dir


def make_rotated_shapes_splits(out_dir: str | os.PathLike, splits: dict[str, int] | None = None,
                               seed: int = 0, **kw) -> dict[str, Path]:
    """Several splits (default ``{"train": 64, "val": 16}``) with distinct seeds; split -> label folder."""
    splits = splits or {"train": 64, "val": 16}
    return {name: make_rotated_shapes_dataset(out_dir, num_images=n, seed=seed * 1000 + k, split=name, **kw)
            for k, (name, n) in enumerate(splits.items())}
