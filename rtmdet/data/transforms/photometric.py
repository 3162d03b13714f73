"""Photometric transforms: the pixels change, the geometry does not."""
from __future__ import annotations

import cv2
import numpy as np

from .sample import Sample

__all__ = ["YOLOXHSVRandomAug", "hsv_shift_per_pixel"]


class YOLOXHSVRandomAug:
    """gains = U(-1, 1, 3) * (hue, sat, val) * randint{0,1}^3, truncated to int16; hue wraps mod
    180, saturation/value clipped to [0, 255] (OpenCV 8-bit HSV)."""

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30):
        self.deltas = (hue_delta, saturation_delta, value_delta)

    def draw_gains(self, rng: np.random.Generator) -> np.ndarray:
        gains = rng.uniform(-1, 1, 3) * np.array(self.deltas, np.float64)
        gains *= rng.integers(0, 2, 3)
        return gains.astype(np.int16)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        gains = self.draw_gains(rng)
        # one 256-entry table (cv2.LUT) per channel whose gain is not 0 instead of int16
        # arithmetic on every pixel: the same values. A zero gain leaves its channel as it is
        # (8-bit hue lies in [0, 180)), so that plane is not touched; the round trip through HSV
        # is kept whatever the gains (it is lossy, and the reference makes it)
        hsv = cv2.cvtColor(s.img, cv2.COLOR_BGR2HSV)
        if gains.any():
            v = np.arange(256, dtype=np.int16)
            tables = ((v + gains[0]) % 180, np.clip(v + gains[1], 0, 255), np.clip(v + gains[2], 0, 255))
            planes = list(cv2.split(hsv))
            for c in np.flatnonzero(gains):
                planes[c] = cv2.LUT(planes[c], tables[c].astype(np.uint8))
            hsv = cv2.merge(planes)
        s.img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return s

    def __repr__(self) -> str:
        return "YOLOXHSVRandomAug(hue_delta={}, saturation_delta={}, value_delta={})".format(*self.deltas)


def hsv_shift_per_pixel(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """The colour shift as mmdet writes it, int16 arithmetic on every pixel: the oracle the
    table-based `YOLOXHSVRandomAug` is tested against and the baseline bench_loader times."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
