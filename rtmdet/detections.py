"""`Detections`: what every predict() returns, whatever the backend."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass
class Detections:
    """Detections of one image in original-image pixels.

    boxes (N,4) xyxy, scores (N,), labels (N,) as torch tensors (or numpy after `.numpy()`);
    masks (N,H,W) bool for instance segmentation models, else None; rboxes (N,5)
    (cx, cy, w, h, theta) for rotated-box models (RTMDet-R, theta in radians, positive turns
    clockwise on screen), else None: then `boxes` is each rotated box's axis-aligned hull."""

    boxes: torch.Tensor | np.ndarray
    scores: torch.Tensor | np.ndarray
    labels: torch.Tensor | np.ndarray
    class_names: list[str] = field(default_factory=list, repr=False)
    masks: torch.Tensor | np.ndarray | None = None
    image_shape: tuple[int, int] | None = None  # (h, w) of the original image
    source: str | None = None  # path of the image, when known
    rboxes: torch.Tensor | np.ndarray | None = None  # (N,5) rotated boxes (RTMDet-R)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def numpy(self) -> "Detections":
        def cv(t):
            return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t
        return replace(self, boxes=cv(self.boxes), scores=cv(self.scores), labels=cv(self.labels),
                       masks=cv(self.masks), rboxes=cv(self.rboxes))

    def names(self) -> list[str]:
        labels = np.asarray(self.numpy().labels).tolist()
        return [self.class_names[i] if 0 <= i < len(self.class_names) else str(i) for i in labels]

    def filter(self, score_thr: float) -> "Detections":
        return self.select(self.scores > score_thr)

    def select(self, keep) -> "Detections":
        """The detections a boolean mask (or an index array) picks, in that order."""
        if isinstance(self.scores, np.ndarray):
            keep = np.asarray(keep.cpu() if isinstance(keep, torch.Tensor) else keep)
        elif not isinstance(keep, torch.Tensor):
            keep = torch.as_tensor(keep, device=self.scores.device)
        return replace(self, boxes=self.boxes[keep], scores=self.scores[keep],
                       labels=self.labels[keep],
                       masks=None if self.masks is None else self.masks[keep],
                       rboxes=None if self.rboxes is None else self.rboxes[keep])

    def polygons(self) -> torch.Tensor | np.ndarray:
        """(N,4,2) corners of the rotated boxes (mmrotate's `rbox2qbox` order), same array type
        as `rboxes`."""
        from .ops.rotated import obb2poly
        if self.rboxes is None:
            raise ValueError("these detections have no rotated boxes")
        if isinstance(self.rboxes, np.ndarray):
            return obb2poly(torch.from_numpy(self.rboxes)).numpy()
        return obb2poly(self.rboxes)

    def to_dict(self) -> dict:
        """JSON-ready: one entry per detection with box, score, label and class name; with masks,
        also `mask` as a COCO RLE `{'size': [H, W], 'counts': str}` (see `masks_rle`); with
        rotated boxes, also `rbox` (cx, cy, w, h, theta) and `poly` (DOTA's 8 numbers x1 y1 ... y4)."""
        d = self.numpy()
        rles = self.masks_rle() if d.masks is not None else None
        polys = np.asarray(self.polygons()).reshape(-1, 8).tolist() if d.rboxes is not None else None
        out = {"source": self.source, "image_shape": list(self.image_shape or []), "detections": []}
        for i, (box, score, label, name) in enumerate(zip(d.boxes.tolist(), d.scores.tolist(),
                                                          d.labels.tolist(), self.names())):
            out["detections"].append({"box": [round(v, 3) for v in box], "score": round(score, 5),
                                      "label": int(label), "name": name})
            if rles is not None:
                out["detections"][-1]["mask"] = rles[i]
            if polys is not None:
                out["detections"][-1]["rbox"] = [round(float(v), 3) for v in d.rboxes[i][:4]] + \
                    [round(float(d.rboxes[i][4]), 6)]
                out["detections"][-1]["poly"] = [round(v, 3) for v in polys[i]]
        return out

    def to_coco(self, image_id: int, cat_ids: list[int] | None = None) -> list[dict]:
        """COCO results entries (bbox as xywh, category ids mapped through `cat_ids`); with
        masks, each entry also has `segmentation` as a COCO RLE (counts as a str)."""
        d = self.numpy()
        rles = self.masks_rle() if d.masks is not None else None
        res = []
        for i, ((x1, y1, x2, y2), s, l) in enumerate(zip(d.boxes.tolist(), d.scores.tolist(),
                                                         d.labels.tolist())):
            res.append({"image_id": int(image_id),
                        "category_id": int(cat_ids[l] if cat_ids is not None else l),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
            if rles is not None:
                res[-1]["segmentation"] = rles[i]
        return res

    def masks_rle(self) -> list[dict]:
        """Per instance `{'size': [H, W], 'counts': str}`, pycocotools-compatible RLE
        (`pycocotools.mask.decode` reads it; its `encode` gives the same counts as bytes)."""
        from .ops.masks import rle_encode
        if self.masks is None:
            raise ValueError("these detections have no masks")
        return [rle_encode(m) for m in np.asarray(self.numpy().masks, dtype=bool)]

    def masks_polygons(self) -> list[list[list[float]]]:
        """Per instance, its outer contours as COCO polygons `[x0, y0, x1, y1, ...]`."""
        from .ops.masks import mask_to_polygons
        if self.masks is None:
            raise ValueError("these detections have no masks")
        return [mask_to_polygons(m) for m in np.asarray(self.numpy().masks, dtype=bool)]

    def to_txt(self) -> str:
        """One line per detection: `label score x1 y1 x2 y2` (original pixels); with rotated
        boxes DOTA-style instead: `x1 y1 x2 y2 x3 y3 x4 y4 class_name score` (the polygon)."""
        d = self.numpy()
        if d.rboxes is not None:
            polys = np.asarray(self.polygons()).reshape(-1, 8).tolist()
            return "".join(" ".join(f"{v:.2f}" for v in p) + f" {n} {s:.5f}\n"
                           for p, n, s in zip(polys, self.names(), d.scores.tolist()))
        return "".join(f"{int(l)} {s:.5f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
                       for b, s, l in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist()))

    def to_yolo(self) -> str:
        """One YOLO label line per detection, normalised to the image (needs `image_shape`), as
        `rtmdet train` reads labels back (pseudo-labelling; no scores): `class cx cy w h` (the
        box clipped to the image); with masks `class x1 y1 x2 y2 ...`, the mask's largest outer
        contour (its box's corners for an empty mask; a 4-point outline gets an edge midpoint,
        so that the line cannot read as YOLO-OBB); with rotated boxes YOLO-OBB's `class x1 y1 ...
        x4 y4`, the corners."""
        if self.image_shape is None:
            raise ValueError("these detections do not know their image's size (image_shape)")
        h, w = self.image_shape
        d = self.numpy()
        boxes = np.asarray(d.boxes, dtype=np.float64).reshape(-1, 4)
        if d.rboxes is not None:
            points = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in np.asarray(self.polygons())]
        elif d.masks is not None:
            points = [_outline(m, b) for m, b in zip(np.asarray(d.masks, dtype=bool), boxes)]
        else:
            b = boxes.clip(0, [w, h, w, h])
            points = [np.array([[(x0 + x1) / 2, (y0 + y1) / 2], [x1 - x0, y1 - y0]]) for x0, y0, x1, y1 in b]
        return "".join(f"{c} " + " ".join(f"{v:.6f}" for v in (p / [w, h]).reshape(-1).tolist()) + "\n"
                       for c, p in zip(np.asarray(d.labels).astype(int).tolist(), points))

    def crop_windows(self) -> list[tuple[int, int, int, int]]:
        """Per detection, the pixel window (x0, y0, x1, y1) its box covers: the box rounded
        outwards to whole pixels, clipped to the image, at least one pixel wide and high (rotated
        boxes: their axis-aligned hull). Needs `image_shape`."""
        if self.image_shape is None:
            raise ValueError("these detections do not know their image's size (image_shape)")
        h, w = self.image_shape
        out = []
        for x0, y0, x1, y1 in np.asarray(self.numpy().boxes, dtype=np.float64).reshape(-1, 4).tolist():
            x0 = min(max(int(np.floor(x0)), 0), w - 1)
            y0 = min(max(int(np.floor(y0)), 0), h - 1)
            out.append((x0, y0, max(min(int(np.ceil(x1)), w), x0 + 1),
                        max(min(int(np.ceil(y1)), h), y0 + 1)))
        return out

    def crops(self, image: np.ndarray) -> list[np.ndarray]:
        """The part of `image` (the one predicted on) inside each detection's box, as copies
        (see `crop_windows`): e.g. to build a classification dataset from detections."""
        shape = self.image_shape
        if shape is not None and tuple(image.shape[:2]) != tuple(shape):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the detections are "
                             f"of a {shape[1]}x{shape[0]} image")
        d = self if shape is not None else replace(self, image_shape=tuple(image.shape[:2]))
        return [image[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in d.crop_windows()]

    def draw(self, image: np.ndarray, score_thr: float = 0.0, **kw) -> np.ndarray:
        """A copy of the BGR image with boxes (and masks) drawn."""
        from .viz import draw_detections
        return draw_detections(image, self.filter(score_thr) if score_thr > 0 else self, **kw)


def _outline(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(K,2) points: the largest outer contour of `mask` (the box's corners when it has none),
    never exactly 4 points (a YOLO line of 4 points reads as an oriented box)."""
    import cv2

    from .ops.masks import mask_to_polygons
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in mask_to_polygons(mask)]
    if not polys:
        x0, y0, x1, y1 = box.tolist()
        polys = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])]
    p = max(polys, key=lambda q: abs(cv2.contourArea(q.astype(np.float32))))
    if len(p) == 4:  # the same outline with the midpoint of its first edge
        p = np.concatenate([p[:1], (p[:1] + p[1:2]) / 2, p[1:]])
    return p
