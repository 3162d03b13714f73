"""Photometric transforms: the pixels change, the geometry does not."""
from __future__ import annotations

import cv2
import numpy as np

from .sample import Sample

__all__ = ["YOLOXHSVRandomAug"]


class YOLOXHSVRandomAug:
    """gains = U(-1, 1, 3) * (hue, sat, val) * randint{0,1}^3, truncated to int16; hue wraps mod
    180, saturation/value clipped to [0, 255] (OpenCV 8-bit HSV)."""

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30):
        self.deltas = (hue_delta, saturation_delta, value_delta)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        gains = rng.uniform(-1, 1, 3) * np.array(self.deltas, np.float64)
        gains *= rng.integers(0, 2, 3)
        gains = gains.astype(np.int16)
        # one 256-entry table per channel (cv2.LUT) instead of int16 arithmetic on every pixel:
        # the same values, a fraction of the time
        v = np.arange(256, dtype=np.int16)
        lut = np.stack([(v + gains[0]) % 180, np.clip(v + gains[1], 0, 255),
                        np.clip(v + gains[2], 0, 255)], 1).astype(np.uint8).reshape(256, 1, 3)
        hsv = cv2.cvtColor(s.img, cv2.COLOR_BGR2HSV)
        s.img = cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)
        return s

    def __repr__(self) -> str:
        return "YOLOXHSVRandomAug(hue_delta={}, saturation_delta={}, value_delta={})".format(*self.deltas)
