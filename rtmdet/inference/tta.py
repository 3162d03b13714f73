"""Test-time augmentation, as the reference's `rtmdet_tta.py` and mmdet's `DetTTAModel`.

Each image is seen six ways: resized to fit 640, 320 and 960 (`TTA_SCALES` x the model's
`imgsz`), each flipped left-right and not (flipped after the resize), every view padded with
114 to the largest size (960 x 960) — so all six share one batch shape. Each view gets the
model's own post-processing (`score_thr`, `nms_pre`, NMS, `max_per_img`), its boxes are mapped
back to the original image (a flipped view's mirrored with the original width, as
`bbox_flip(ori_shape)`), and the union is merged by class-aware NMS at IoU 0.6 keeping 100
(the reference's `tta_cfg`). Boxes only: the reference does not merge masks or rotated boxes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config import TestConfig
from ..data.letterbox import ImageMeta, letterbox
from ..detections import Detections
from ..ops.nms import batched_nms
from .tiling import PAD_VALUE

TTA_SCALES = (1.0, 0.5, 1.5)  # x imgsz: the reference's (640, 640), (320, 320), (960, 960)
TTA_FLIPS = (True, False)  # the reference's RandomFlip(prob=1.) then RandomFlip(prob=0.)
TTA_NMS_IOU = 0.6  # tta_cfg.nms.iou_threshold
TTA_MAX_PER_IMG = 100  # tta_cfg.max_per_img
VIEWS = len(TTA_SCALES) * len(TTA_FLIPS)  # per image


def tta_sizes(size: tuple[int, int]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """The (h, w) each view is resized to fit, and the padded (h, w) they all share (the
    largest, up to a multiple of 32 as the reference's data preprocessor pads)."""
    h, w = size
    sizes = [(int(round(h * f)), int(round(w * f))) for f in TTA_SCALES]
    pad = tuple(int(math.ceil(max(s[i] for s in sizes) / 32) * 32) for i in (0, 1))
    return sizes, pad


def tta_views(img: np.ndarray, size: tuple[int, int]) -> tuple[list[np.ndarray], list[ImageMeta], list[bool]]:
    """The six HxWx3 uint8 views of one BGR image (scale-major, flipped first), their metas
    (scale factors of each resize; `img_shape` the shared padded size, what boxes are clamped
    to, as in the normal path) and whether each is flipped."""
    sizes, (ph, pw) = tta_sizes(size)
    views, metas, flips = [], [], []
    h, w = img.shape[:2]
    for s in sizes:
        padded, scale, (nh, nw) = letterbox(img, s, PAD_VALUE)
        resized = padded[:nh, :nw]
        for flip in TTA_FLIPS:
            canvas = np.full((ph, pw, 3), PAD_VALUE, np.uint8)
            canvas[:nh, :nw] = resized[:, ::-1] if flip else resized
            views.append(canvas)
            metas.append(ImageMeta((h, w), scale, (ph, pw)))
            flips.append(flip)
    return views, metas, flips


def merge_views(dets: list[Detections], flips: list[bool], image_shape: tuple[int, int]) -> Detections:
    """One image's view detections (original pixels; flipped views still mirrored) -> the
    merged detections: mirrored back, class-aware NMS at `TTA_NMS_IOU`, best `TTA_MAX_PER_IMG`."""
    w = image_shape[1]
    boxes = []
    for d, flip in zip(dets, flips):
        b = d.boxes.float()
        if flip:  # bbox_flip(direction="horizontal") with the original width
            b = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
        boxes.append(b)
    boxes = torch.cat(boxes)
    scores = torch.cat([d.scores.float() for d in dets])
    labels = torch.cat([d.labels.long() for d in dets])
    keep = batched_nms(boxes, scores, labels, TTA_NMS_IOU)[:TTA_MAX_PER_IMG]
    return Detections(boxes[keep], scores[keep], labels[keep], list(dets[0].class_names),
                      image_shape=tuple(image_shape))


def check_tta(backend, imgsz=None) -> None:
    """ValueError where test-time augmentation does not apply: another family than detection,
    or a static-shape graph (the padded views are larger than its input)."""
    if backend.family.name != "detect":
        raise ValueError(f"tta: detection models only (the reference merges boxes, not the "
                         f"{backend.family.name} family's masks or rotated boxes)")
    if hasattr(backend, "input_size"):
        size = backend.input_size(imgsz)
        pad = tta_sizes(size)[1]
        try:
            backend.input_size(pad)
        except ValueError:
            raise ValueError(f"tta: its views are {pad[0]}x{pad[1]} (1.5x the {size[0]}x{size[1]} "
                             f"input, padded), which {backend} cannot take: export with --dynamic") from None


def run_tta(backend, images: list[np.ndarray], cfg: TestConfig, batch_size: int = 8) -> list[Detections]:
    """Decoded BGR images -> their merged test-time-augmented detections; the views of all
    `images` run `batch_size` at a time. The caller has checked the backend (`check_tta`)."""
    size = backend.input_size(cfg.imgsz)
    _, pad = tta_sizes(size)
    jobs = []  # (view, meta) of every image, image by image
    for img in images:
        views, metas, _ = tta_views(img, size)
        jobs += list(zip(views, metas))
    if backend.fixed_batch:
        batch_size = min(batch_size, backend.fixed_batch)
    per_view: list[Detections] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        # the views already have the input size: the backend's own letterbox (host or device,
        # any graph) passes them through unchanged; the views' metas replace its identity ones
        x, _ = backend.preprocess([v for v, _ in chunk], pad)
        per_view += backend.postprocess(backend.infer_async(x), [m for _, m in chunk], cfg)
    flips = list(TTA_FLIPS) * len(TTA_SCALES)  # each image's views, in `tta_views` order
    return [merge_views(per_view[i * VIEWS:(i + 1) * VIEWS], flips, img.shape[:2])
            for i, img in enumerate(images)]
