"""Resizing only the part of an image that a crop will keep, with the values the whole
resize gives: the training pipeline resizes its 1280x1280 mosaic canvas by up to 2x, then keeps
a 640x640 crop."""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["resize_top_left", "TOP_LEFT_MARGIN"]

TOP_LEFT_MARGIN = 32  # output pixels computed beyond what is asked for


def resize_top_left(img: np.ndarray, size: tuple[int, int], need: tuple[int, int]) -> np.ndarray:
    """At least the top-left ``need`` = (w, h) pixels of ``cv2.resize(img, size)`` (bilinear),
    with the same values, computed from the top-left of ``img`` only.

    Why it is exact: OpenCV places output pixel x at source ``(x + 0.5) / fx - 0.5`` and derives
    its taps and fixed-point weights from that alone; given ``fx = size[0] / w`` (the double
    OpenCV divides itself when given a size) it does the same for a source cut at its right and
    bottom, so every output pixel whose taps lie inside the cut is computed exactly as in the
    whole image. The cut keeps two source pixels and `TOP_LEFT_MARGIN` output pixels beyond the
    last one asked for (clear of the clamped edge and of any vector loop's tail); when the block
    would reach the far edge the whole image is resized. Tested bit for bit against the whole
    resize in tests/test_transforms.py."""
    h, w = img.shape[:2]
    nw, nh = size
    need_w, need_h = min(need[0], nw) + TOP_LEFT_MARGIN, min(need[1], nh) + TOP_LEFT_MARGIN
    fx, fy = nw / w, nh / h
    sw = w if need_w >= nw else min(w, math.floor(need_w / fx) + 2)
    sh = h if need_h >= nh else min(h, math.floor(need_h / fy) + 2)
    if (sw, sh) == (w, h):
        return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img[:sh, :sw], None, fx=fx, fy=fy, interpolation=cv2.INTER_LINEAR)
