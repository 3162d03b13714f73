"""Per-instance targets that travel with a sample's boxes through the transforms."""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["resize_masks", "masks_to_boxes"]


def resize_masks(masks: np.ndarray, w: int, h: int) -> np.ndarray:
    """(n, H, W) masks to (n, h, w), nearest neighbour."""
    if len(masks) == 0:
        return np.zeros((0, h, w), np.uint8)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks])


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """HorizontalBoxes.from_instance_masks: [x_min, y_min, x_max + 1, y_max + 1], zeros if empty."""
    boxes = np.zeros((len(masks), 4), np.float32)
    x_any = masks.any(axis=1)
    y_any = masks.any(axis=2)
    for i in range(len(masks)):
        xs, ys = np.flatnonzero(x_any[i]), np.flatnonzero(y_any[i])
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes
