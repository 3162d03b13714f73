"""Binary-mask encodings: COCO run-length encoding (pycocotools-compatible, no pycocotools
needed) and polygons (OpenCV contours)."""
from __future__ import annotations

import cv2
import numpy as np


def _runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a column-major (Fortran order) flattened mask, starting with zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]  # as pycocotools: a single empty run of zeros
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return runs


def _counts_to_string(counts: list[int]) -> str:
    """The compact COCO string form: delta (to the count two back, from the 4th on) in
    5-bit little-endian groups, 0x20 = continuation, offset by 48 into printable ASCII."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as the C code's `long`
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _string_to_counts(s: str | bytes) -> list[int]:
    data = s.encode() if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray) -> dict:
    """(H,W) bool mask -> `{'size': [H, W], 'counts': str}`, the same encoding as
    `pycocotools.mask.encode` (whose `counts` are the bytes of this string); JSON-ready."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H,W) mask, got shape {mask.shape}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": _counts_to_string(_runs(mask))}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of `rle_encode` (also accepts pycocotools' bytes counts or uncompressed lists)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = list(counts) if isinstance(counts, (list, tuple)) else _string_to_counts(counts)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f"RLE covers {flat.size} pixels, size says {h}x{w}")
    return flat.reshape((w, h)).T.copy()


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outer contours of a bool mask as COCO polygons `[x0, y0, x1, y1, ...]` (pixel
    coordinates of boundary pixels, OpenCV's simple chain approximation)."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    if m.size == 0:
        return []
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= min_points:
            polys.append(c.reshape(-1).astype(float).tolist())
    return polys
