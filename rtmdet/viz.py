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


def draw_batch(batch: dict, class_names, max_images: int = 16, max_side: int = 1920) -> np.ndarray:
    """A training batch as the model receives it, in one picture: up to `max_images` images in
    a grid (at most `max_side` px wide and high) with their ground-truth boxes (rotated boxes
    for RTMDet-R) and class names, ignored boxes in grey. What a user checks their labels and
    augmentation with (`train_batch_stage1.jpg` of a run)."""
    import torch

    from .detections import Detections
    imgs = batch["imgs"][:max_images]
    n, _, h, w = imgs.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    s = min(1.0, max_side / (cols * w), max_side / (rows * h))
    th, tw = max(1, round(h * s)), max(1, round(w * s))
    grid = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    for k in range(n):
        img = np.ascontiguousarray(imgs[k].permute(1, 2, 0).cpu().numpy())
        img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA) if s < 1 else img.copy()
        ignored = torch.as_tensor(batch["ignored_boxes"][k]).reshape(-1, 4).float() * s
        for x1, y1, x2, y2 in ignored.round().int().tolist():
            cv2.rectangle(img, (x1, y1), (x2, y2), (128, 128, 128), 1, cv2.LINE_AA)
        boxes = torch.as_tensor(batch["boxes"][k]).reshape(-1, 4).float() * s
        labels = torch.as_tensor(batch["labels"][k]).reshape(-1).long()
        rboxes = None
        if "rboxes" in batch:
            rboxes = torch.as_tensor(batch["rboxes"][k]).reshape(-1, 5).float().clone()
            rboxes[:, :4] *= s
        gt = Detections(boxes, torch.ones(len(labels)), labels, list(class_names), rboxes=rboxes)
        img = draw_detections(img, gt, show_score=False)
        r, c = divmod(k, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = img
    for c in range(1, cols):  # white lines between the images
        grid[:, c * tw - 1:c * tw + 1] = 255
    for r in range(1, rows):
        grid[r * th - 1:r * th + 1] = 255
    return grid
