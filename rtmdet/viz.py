"""Drawing detections on images."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np


def palette(n: int) -> list[tuple[int, int, int]]:
    """n well-separated BGR colours (golden-ratio hue steps), stable across runs."""
    out = []
    for i in range(max(n, 1)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        out.append((int(b * 255), int(g * 255), int(r * 255)))
    return out


def draw_detections(image: np.ndarray, dets, thickness: int | None = None,
                    show_score: bool = True, mask_alpha: float = 0.45) -> np.ndarray:
    img = image.copy()
    d = dets.numpy()
    colors = palette(max(len(dets.class_names), int(d.labels.max()) + 1 if len(d) else 1))
    t = thickness or max(1, round(sum(img.shape[:2]) / 600))
    if d.masks is not None and len(d):
        overlay = img.copy()
        for m, l in zip(d.masks, d.labels):
            overlay[m.astype(bool)] = colors[int(l)]
        img = cv2.addWeighted(overlay, mask_alpha, img, 1 - mask_alpha, 0)
    names = dets.names()
    polys = np.asarray(dets.polygons()) if d.rboxes is not None else None  # rotated boxes
    order = np.argsort(d.scores)  # draw the strongest last, on top
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in d.boxes[i])
        c = colors[int(d.labels[i])]
        if polys is not None:
            cv2.polylines(img, [np.round(polys[i]).astype(np.int32).reshape(-1, 1, 2)], True, c, t,
                          cv2.LINE_AA)
            x1, y1 = (int(round(v)) for v in polys[i][np.argmin(polys[i][:, 1])])  # top corner
        else:
            cv2.rectangle(img, (x1, y1), (x2, y2), c, t, cv2.LINE_AA)
        text = f"{names[i]} {d.scores[i]:.2f}" if show_score else names[i]
        scale = max(0.4, t / 3)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, t // 2))
        ty = max(y1, th + base)
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw, ty), c, -1)
        cv2.putText(img, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, t // 2), cv2.LINE_AA)
    return img
