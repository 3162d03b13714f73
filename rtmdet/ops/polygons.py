"""Quadrilateral / polygon geometry for rotated-box data (DOTA): polygon -> le90 box, clipping, area.

numpy + cv2 only: these run in data loading and in the offline split tool, not on the GPU.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["poly2obb_le90", "clip_polygon_to_rect", "polygon_area"]

_PI32 = np.float32(np.pi)
_HALF_PI32 = np.float32(np.pi / 2)


def poly2obb_le90(polys: np.ndarray) -> np.ndarray:
    """(n,8) quadrilaterals x1,y1,...,x4,y4 -> (n,5) float32 (cx, cy, w, h, theta), le90.

    Same as mmrotate 1.x ``qbox2rbox`` (``cv2.minAreaRect`` on the float32 corners, angle
    degrees -> radians) followed by ``RotatedBoxes.regularize_boxes('le90')``: if not w > h,
    swap w/h and add pi/2; then wrap theta into [-pi/2, pi/2). Arithmetic in float32 as the
    reference does it on a float32 tensor, so results agree to the bit. A square's angle depends
    on which edge cv2 reports first (the box is the same either way).
    """
    pts = np.asarray(polys, np.float32).reshape(-1, 4, 2)
    raw = np.zeros((len(pts), 5), np.float32)
    for i, p in enumerate(pts):
        (x, y), (w, h), a = cv2.minAreaRect(p)
        raw[i] = (x, y, w, h, a / 180 * np.pi)  # python float math, then float32 (as `new_tensor`)
    x, y, w, h, t = raw.T
    longer = w > h
    w_, h_ = np.where(longer, w, h), np.where(longer, h, w)
    t = np.where(longer, t, t + _HALF_PI32)
    # torch.remainder semantics (result has the divisor's sign), in float32
    r = np.fmod(t + _HALF_PI32, _PI32)
    r = np.where((r != 0) & (r < 0), r + _PI32, r)
    t = (r - _HALF_PI32).astype(np.float32)
    return np.stack([x, y, w_, h_, t], axis=-1).astype(np.float32)


def clip_polygon_to_rect(poly: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The part of polygon ``poly`` (k,2) inside the rectangle [x0,x1]x[y0,y1] (Sutherland-Hodgman).

    Returns (m,2) float64, m = 0 when nothing is inside. Edges count as inside, so a polygon that
    lies wholly in the rectangle comes back unchanged (same vertices, same order) and its clipped
    area equals its area exactly. Correct for any polygon against this convex window.
    """
    out = [tuple(map(float, v)) for v in np.asarray(poly, np.float64).reshape(-1, 2)]
    # each clip edge: (inside test, intersection of segment p->q with the edge line)
    for axis, bound, keep_ge in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if not out:
            break
        inp, out = out, []
        prev = inp[-1]
        prev_in = prev[axis] >= bound if keep_ge else prev[axis] <= bound
        for cur in inp:
            cur_in = cur[axis] >= bound if keep_ge else cur[axis] <= bound
            if cur_in != prev_in:  # the segment crosses the edge line: add the crossing point
                s = (bound - prev[axis]) / (cur[axis] - prev[axis])
                o = 1 - axis
                pt = [0.0, 0.0]
                pt[axis] = bound
                pt[o] = prev[o] + s * (cur[o] - prev[o])
                out.append(tuple(pt))
            if cur_in:
                out.append(cur)
            prev, prev_in = cur, cur_in
    return np.array(out, np.float64).reshape(-1, 2)


def polygon_area(poly: np.ndarray) -> np.ndarray | float:
    """Unsigned shoelace area of polygon(s) (..., k, 2); a float for a single (k,2) polygon."""
    p = np.asarray(poly, np.float64)
    if p.ndim < 2 or p.shape[-2] < 3:
        return 0.0 if p.ndim <= 2 else np.zeros(p.shape[:-2])
    x, y = p[..., 0], p[..., 1]
    a = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1))
    return float(a) if p.ndim == 2 else a
