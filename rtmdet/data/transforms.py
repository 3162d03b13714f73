"""Image/box (and bitmap-mask) transforms for RTMDet training and inference.

The arithmetic follows the reference (mmdet 3.3.0 ``datasets/transforms/transforms.py`` and
mmcv 2.x ``transforms/processing.py`` + ``image/geometric.py``): the same sizes, integer
truncations, clipping, "is inside" filtering, pad value and the same sequence of random draws,
with ``numpy.random.<fn>`` replaced by the matching ``numpy.random.Generator`` call that every
transform receives explicitly::

    sample = transform(sample, rng)     # -> Sample, or None when the reference returns None

``None`` means "drop this sample and fetch another one" (mmengine's ``BaseDataset`` refetch),
which :class:`rtmdet.data.loader.TrainDataset` implements.

Samples carry bitmap masks ``(n, H, W) uint8`` when present; every geometric transform moves
them together with the boxes (the reference RTMDet-Ins configs use polygon masks; we use bitmaps
and apply to them exactly the geometry applied to the image).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

__all__ = [
    "Sample", "rescale_size", "Compose", "CachedMosaic", "CachedMixUp",
    "Resize", "RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "RandomFlip", "Pad",
    "FilterAnnotations", "PipelineParams", "PIPELINE_PARAMS", "pipeline_params",
    "build_train_pipeline",
]

PAD_VAL = 114


# ----------------------------------------------------------------------------- inference helpers
def rescale_size(w: int, h: int, scale: float | tuple[int, int]) -> tuple[tuple[int, int], float]:
    """mmcv ``rescale_size``: new (w, h) and the nominal factor for a keep-ratio resize.

    A tuple ``scale`` is read as (long edge, short edge) limits, as mmcv does:
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w)); sizes round with +0.5.
    """
    if isinstance(scale, (int, float)):
        factor = float(scale)
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return (int(w * factor + 0.5), int(h * factor + 0.5)), factor


# ----------------------------------------------------------------------------- sample
@dataclass
class Sample:
    """One training sample: image, xyxy boxes, labels, ignore (iscrowd) flags, optional masks."""

    img: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray | None = None  # (n,) bool; None -> all False
    masks: np.ndarray | None = None  # (n, H, W) uint8
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if self.ignore is None:
            self.ignore = np.zeros(len(self.boxes), bool)
        self.ignore = np.asarray(self.ignore, bool).reshape(-1)
        if self.masks is not None:
            self.masks = np.asarray(self.masks, np.uint8)
        n = len(self.boxes)
        assert len(self.labels) == n and len(self.ignore) == n, "boxes/labels/ignore length mismatch"
        assert self.masks is None or len(self.masks) == n, "masks/boxes length mismatch"

    def copy(self) -> "Sample":
        return copy.deepcopy(self)

    def select(self, keep: np.ndarray) -> None:
        """Keep only the instances where ``keep`` (bool mask or indices)."""
        self.boxes = self.boxes[keep]
        self.labels = self.labels[keep]
        self.ignore = self.ignore[keep]
        if self.masks is not None:
            self.masks = self.masks[keep]


def _clip(boxes: np.ndarray, h: int, w: int) -> None:
    """HorizontalBoxes.clip_: x into [0, w], y into [0, h] (in place)."""
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)


def _inside(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """HorizontalBoxes.is_inside (partial): x1 < w, y1 < h, x2 > 0, y2 > 0."""
    return (boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def _resize_masks(masks: np.ndarray, w: int, h: int) -> np.ndarray:
    if len(masks) == 0:
        return np.zeros((0, h, w), np.uint8)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks])


def _masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """HorizontalBoxes.from_instance_masks: [x_min, y_min, x_max + 1, y_max + 1], zeros if empty."""
    boxes = np.zeros((len(masks), 4), np.float32)
    x_any = masks.any(axis=1)
    y_any = masks.any(axis=2)
    for i in range(len(masks)):
        xs, ys = np.flatnonzero(x_any[i]), np.flatnonzero(y_any[i])
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


class Compose:
    """Apply transforms in order; stop with None as soon as one returns None."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | None:
        for t in self.transforms:
            sample = t(sample, rng)
            if sample is None:
                return None
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


# ----------------------------------------------------------------------------- geometric
class Resize:
    """mmdet ``Resize``: keep-ratio (mmcv rescale_size) or exact resize; boxes scaled by the
    actual factors (new_w / w, new_h / h) and clipped to the new image; masks nearest."""

    def __init__(self, scale: tuple[int, int], keep_ratio: bool = True, clip_object_border: bool = True):
        self.scale = (int(scale[0]), int(scale[1]))
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border

    def apply(self, s: Sample, scale: tuple[int, int]) -> Sample:
        h, w = s.img.shape[:2]
        if self.keep_ratio:
            (nw, nh), _ = rescale_size(w, h, scale)
        else:
            nw, nh = scale
        nw, nh = max(1, nw), max(1, nh)  # the reference would crash on a 0-size resize
        s.img = cv2.resize(s.img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        ws, hs = nw / w, nh / h
        s.boxes = (s.boxes * np.array([ws, hs, ws, hs], np.float32)).astype(np.float32)
        if self.clip_object_border:
            _clip(s.boxes, nh, nw)
        if s.masks is not None:
            s.masks = _resize_masks(s.masks, nw, nh)
        s.meta["scale_factor"] = (ws, hs)
        return s

    def __call__(self, s: Sample, rng: np.random.Generator | None = None) -> Sample:
        return self.apply(s, self.scale)

    def __repr__(self) -> str:
        return f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio})"


class RandomResize:
    """mmcv ``RandomResize`` with a (w, h) ``scale`` and ``ratio_range``:
    ratio = U[0,1) * (max - min) + min; target = (int(w * ratio), int(h * ratio)); then Resize."""

    def __init__(self, scale: tuple[int, int], ratio_range: tuple[float, float], keep_ratio: bool = True):
        assert ratio_range[0] <= ratio_range[1]
        self.scale = (int(scale[0]), int(scale[1]))
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.resize = Resize(self.scale, keep_ratio=keep_ratio)

    def sample_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        lo, hi = self.ratio_range
        ratio = rng.random() * (hi - lo) + lo
        return int(self.scale[0] * ratio), int(self.scale[1] * ratio)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        return self.resize.apply(s, self.sample_scale(rng))

    def __repr__(self) -> str:
        return f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, keep_ratio={self.resize.keep_ratio})"


class RandomCrop:
    """mmdet ``RandomCrop`` with crop_type 'absolute': crop (min(ch, h), min(cw, w)) at offsets
    drawn h first then w in [0, margin]; boxes translated, clipped, kept if inside; returns None
    when no box survives and ``allow_negative_crop`` is False (also for images without boxes)."""

    def __init__(self, crop_size: tuple[int, int], allow_negative_crop: bool = False,
                 recompute_bbox: bool = False, bbox_clip_border: bool = True):
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))  # (w, h)
        self.allow_negative_crop = allow_negative_crop
        self.recompute_bbox = recompute_bbox
        self.bbox_clip_border = bbox_clip_border

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample | None:
        h, w = s.img.shape[:2]
        ch, cw = min(self.crop_size[1], h), min(self.crop_size[0], w)
        off_h = int(rng.integers(0, max(h - ch, 0) + 1))
        off_w = int(rng.integers(0, max(w - cw, 0) + 1))
        s.img = s.img[off_h:off_h + ch, off_w:off_w + cw]
        nh, nw = s.img.shape[:2]
        boxes = s.boxes - np.array([off_w, off_h, off_w, off_h], np.float32)
        if self.bbox_clip_border:
            _clip(boxes, nh, nw)
        valid = _inside(boxes, nh, nw)
        if not valid.any() and not self.allow_negative_crop:
            return None
        s.boxes = boxes
        s.select(valid)
        if s.masks is not None:
            s.masks = s.masks[:, off_h:off_h + ch, off_w:off_w + cw]
            if self.recompute_bbox:
                s.boxes = _masks_to_boxes(s.masks)
        return s

    def __repr__(self) -> str:
        return (f"RandomCrop(crop_size={self.crop_size}, allow_negative_crop={self.allow_negative_crop}, "
                f"recompute_bbox={self.recompute_bbox})")


class RandomFlip:
    """Horizontal flip with probability ``prob``; x1' = w - x2, x2' = w - x1."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    @staticmethod
    def flip(s: Sample) -> Sample:
        w = s.img.shape[1]
        s.img = np.ascontiguousarray(s.img[:, ::-1])
        b = s.boxes.copy()
        s.boxes[:, 0] = w - b[:, 2]
        s.boxes[:, 2] = w - b[:, 0]
        if s.masks is not None:
            s.masks = np.ascontiguousarray(s.masks[:, :, ::-1])
        return s

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        # mmcv draws np.random.choice(['horizontal', None], p=[prob, 1 - prob]): first if u < prob
        if rng.random() < self.prob:
            s = self.flip(s)
            s.meta["flip"] = True
        return s

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


class Pad:
    """Pad bottom/right to ``size`` = (w, h) with ``pad_val`` (masks with 0)."""

    def __init__(self, size: tuple[int, int], pad_val: int = PAD_VAL):
        self.size = (int(size[0]), int(size[1]))
        self.pad_val = pad_val

    def __call__(self, s: Sample, rng: np.random.Generator | None = None) -> Sample:
        tw, th = self.size
        h, w = s.img.shape[:2]
        if h > th or w > tw:
            raise ValueError(f"Pad: image {w}x{h} is larger than the pad size {tw}x{th}")
        if (h, w) != (th, tw):
            out = np.full((th, tw) + s.img.shape[2:], self.pad_val, dtype=s.img.dtype)
            out[:h, :w] = s.img
            s.img = out
            if s.masks is not None:
                m = np.zeros((len(s.masks), th, tw), np.uint8)
                m[:, :h, :w] = s.masks
                s.masks = m
        return s

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, pad_val={self.pad_val})"


class FilterAnnotations:
    """mmdet ``FilterAnnotations`` by box: keep w > min_w and h > min_h. As in the reference,
    when *no* box passes and ``keep_empty`` is True the sample is dropped (None); an image that
    arrives with zero boxes passes through unchanged."""

    def __init__(self, min_gt_bbox_wh: tuple[float, float] = (1, 1), keep_empty: bool = True):
        self.min_gt_bbox_wh = min_gt_bbox_wh
        self.keep_empty = keep_empty

    def __call__(self, s: Sample, rng: np.random.Generator | None = None) -> Sample | None:
        if len(s.boxes) == 0:
            return s
        keep = ((s.boxes[:, 2] - s.boxes[:, 0]) > self.min_gt_bbox_wh[0]) & \
               ((s.boxes[:, 3] - s.boxes[:, 1]) > self.min_gt_bbox_wh[1])
        if not keep.any() and self.keep_empty:
            return None
        s.select(keep)
        return s

    def __repr__(self) -> str:
        return f"FilterAnnotations(min_gt_bbox_wh={self.min_gt_bbox_wh})"


# ----------------------------------------------------------------------------- photometric
class YOLOXHSVRandomAug:
    """gains = U(-1, 1, 3) * (hue, sat, val) * randint{0,1}^3, truncated to int16; hue wraps mod
    180, saturation/value clipped to [0, 255] (OpenCV 8-bit HSV)."""

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30):
        self.deltas = (hue_delta, saturation_delta, value_delta)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        gains = rng.uniform(-1, 1, 3) * np.array(self.deltas, np.float64)
        gains *= rng.integers(0, 2, 3)
        gains = gains.astype(np.int16)
        hsv = cv2.cvtColor(s.img, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
        s.img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        return s

    def __repr__(self) -> str:
        return "YOLOXHSVRandomAug(hue_delta={}, saturation_delta={}, value_delta={})".format(*self.deltas)


# ----------------------------------------------------------------------------- mixing
def _push(cache: list, item: Sample, max_cached: int, random_pop: bool, rng: np.random.Generator) -> None:
    """Append then, when over capacity, pop index 0 (FIFO) or a random index.

    The reference draws ``numpy.random.randint(0, len(cache) - 1)`` whose upper bound is
    exclusive, so the just-appended entry is never popped; reproduced here.
    """
    cache.append(item.copy())
    if len(cache) > max_cached:
        idx = int(rng.integers(0, len(cache) - 1)) if random_pop else 0
        cache.pop(idx)


class CachedMosaic:
    """mmdet ``CachedMosaic``: 4-image mosaic on a (2h, 2w) canvas filled with ``pad_val``,
    the current sample top-left plus 3 drawn from a per-instance cache (per worker)."""

    def __init__(self, img_scale: tuple[int, int] = (640, 640), center_ratio_range=(0.5, 1.5),
                 bbox_clip_border: bool = True, pad_val: float = 114.0, prob: float = 1.0,
                 max_cached_images: int = 40, random_pop: bool = True):
        assert max_cached_images >= 4 and 0 <= prob <= 1
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))  # (w, h)
        self.center_ratio_range = center_ratio_range
        self.bbox_clip_border = bbox_clip_border
        self.pad_val = pad_val
        self.prob = prob
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        self.results_cache: list[Sample] = []

    def _combine(self, loc: int, cx: int, cy: int, w: int, h: int):
        sw, sh = self.img_scale
        if loc == 0:  # top left
            x1, y1, x2, y2 = max(cx - w, 0), max(cy - h, 0), cx, cy
            crop = (w - (x2 - x1), h - (y2 - y1), w, h)
        elif loc == 1:  # top right
            x1, y1, x2, y2 = cx, max(cy - h, 0), min(cx + w, sw * 2), cy
            crop = (0, h - (y2 - y1), min(w, x2 - x1), h)
        elif loc == 2:  # bottom left
            x1, y1, x2, y2 = max(cx - w, 0), cy, cx, min(sh * 2, cy + h)
            crop = (w - (x2 - x1), 0, w, min(y2 - y1, h))
        else:  # bottom right
            x1, y1, x2, y2 = cx, cy, min(cx + w, sw * 2), min(sh * 2, cy + h)
            crop = (0, 0, min(w, x2 - x1), min(y2 - y1, h))
        return (x1, y1, x2, y2), crop

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        _push(self.results_cache, s, self.max_cached_images, self.random_pop, rng)
        if len(self.results_cache) <= 4:
            return s
        if rng.uniform(0, 1) > self.prob:
            return s
        # numpy randint(0, len - 1): exclusive bound, the newest entry is never drawn (reference)
        idx = [int(rng.integers(0, len(self.results_cache) - 1)) for _ in range(3)]
        sw, sh = self.img_scale
        cx = int(rng.uniform(*self.center_ratio_range) * sw)
        cy = int(rng.uniform(*self.center_ratio_range) * sh)
        canvas = np.full((sh * 2, sw * 2) + s.img.shape[2:], self.pad_val, dtype=s.img.dtype)
        with_mask = s.masks is not None
        boxes, labels, ignore, masks = [], [], [], []
        for loc, patch in enumerate([s] + [self.results_cache[i] for i in idx]):
            img = patch.img
            h, w = img.shape[:2]
            r = min(sh / h, sw / w)
            nw, nh = int(w * r), int(h * r)
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            (x1p, y1p, x2p, y2p), (x1c, y1c, x2c, y2c) = self._combine(loc, cx, cy, nw, nh)
            canvas[y1p:y2p, x1p:x2p] = img[y1c:y2c, x1c:x2c]
            padw, padh = x1p - x1c, y1p - y1c
            boxes.append(patch.boxes * np.float32(r) + np.array([padw, padh, padw, padh], np.float32))
            labels.append(patch.labels)
            ignore.append(patch.ignore)
            if with_mask:
                pm = patch.masks if patch.masks is not None else np.zeros((len(patch.boxes), h, w), np.uint8)
                pm = _resize_masks(pm, nw, nh)
                m = np.zeros((len(pm), sh * 2, sw * 2), np.uint8)
                m[:, y1p:y2p, x1p:x2p] = pm[:, y1c:y2c, x1c:x2c]
                masks.append(m)
        out = Sample(canvas, np.concatenate(boxes).astype(np.float32), np.concatenate(labels),
                     np.concatenate(ignore), np.concatenate(masks) if with_mask else None, dict(s.meta))
        if self.bbox_clip_border:
            _clip(out.boxes, sh * 2, sw * 2)
        out.select(_inside(out.boxes, sh * 2, sw * 2))
        return out

    def __repr__(self) -> str:
        return (f"CachedMosaic(img_scale={self.img_scale}, pad_val={self.pad_val}, prob={self.prob}, "
                f"max_cached_images={self.max_cached_images}, random_pop={self.random_pop})")


class CachedMixUp:
    """mmdet ``CachedMixUp``: blend 0.5/0.5 with a cached sample letterboxed into ``img_scale``,
    jittered by ``ratio_range``, maybe flipped, randomly cropped to the current image size."""

    def __init__(self, img_scale: tuple[int, int] = (640, 640), ratio_range=(0.5, 1.5),
                 flip_ratio: float = 0.5, pad_val: float = 114.0, max_iters: int = 15,
                 bbox_clip_border: bool = True, max_cached_images: int = 20,
                 random_pop: bool = True, prob: float = 1.0):
        assert max_cached_images >= 2 and 0 <= prob <= 1
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))  # (w, h)
        self.ratio_range = ratio_range
        self.flip_ratio = flip_ratio
        self.pad_val = pad_val
        self.max_iters = max_iters
        self.bbox_clip_border = bbox_clip_border
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        self.prob = prob
        self.results_cache: list[Sample] = []

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        cache = self.results_cache
        _push(cache, s, self.max_cached_images, self.random_pop, rng)
        if len(cache) <= 1:
            return s
        if rng.uniform(0, 1) > self.prob:
            return s
        for _ in range(self.max_iters):
            index = int(rng.integers(0, len(cache) - 1))  # exclusive bound, as the reference
            if len(cache[index].boxes) != 0:
                break
        r = cache[index]
        if len(r.boxes) == 0:
            return s
        jit = rng.uniform(*self.ratio_range)
        is_flip = rng.uniform(0, 1) > self.flip_ratio
        sw, sh = self.img_scale
        rimg = r.img
        out = np.full((sh, sw) + rimg.shape[2:], self.pad_val, dtype=rimg.dtype)
        ratio = min(sh / rimg.shape[0], sw / rimg.shape[1])
        rw, rh = int(rimg.shape[1] * ratio), int(rimg.shape[0] * ratio)
        out[:rh, :rw] = cv2.resize(rimg, (rw, rh), interpolation=cv2.INTER_LINEAR)
        ow, oh = int(out.shape[1] * jit), int(out.shape[0] * jit)
        out = cv2.resize(out, (ow, oh), interpolation=cv2.INTER_LINEAR)
        rmasks = None
        if s.masks is not None:
            # same geometry as the image: letterbox canvas, jitter resize (nearest)
            src = r.masks if r.masks is not None else np.zeros((len(r.boxes),) + rimg.shape[:2], np.uint8)
            m = np.zeros((len(src), sh, sw), np.uint8)
            m[:, :rh, :rw] = _resize_masks(src, rw, rh)
            rmasks = _resize_masks(m, ow, oh)
        if is_flip:
            out = out[:, ::-1]
            if rmasks is not None:
                rmasks = rmasks[:, :, ::-1]
        th, tw = s.img.shape[:2]
        padded = np.full((max(oh, th), max(ow, tw)) + out.shape[2:], self.pad_val, np.float64).astype(np.uint8)
        padded[:oh, :ow] = out
        y_off = int(rng.integers(0, padded.shape[0] - th)) if padded.shape[0] > th else 0
        x_off = int(rng.integers(0, padded.shape[1] - tw)) if padded.shape[1] > tw else 0
        cropped = padded[y_off:y_off + th, x_off:x_off + tw]

        scale = ratio * jit
        rb = (r.boxes * np.float32(scale)).astype(np.float32)
        if self.bbox_clip_border:
            _clip(rb, oh, ow)
        if is_flip:
            b = rb.copy()
            rb[:, 0] = ow - b[:, 2]
            rb[:, 2] = ow - b[:, 0]
        rb = rb - np.array([x_off, y_off, x_off, y_off], np.float32)
        if self.bbox_clip_border:
            _clip(rb, th, tw)
        if rmasks is not None:
            pm = np.zeros((len(rmasks), max(oh, th), max(ow, tw)), np.uint8)
            pm[:, :oh, :ow] = rmasks
            rmasks = pm[:, y_off:y_off + th, x_off:x_off + tw]

        img = (0.5 * s.img.astype(np.float32) + 0.5 * cropped.astype(np.float32)).astype(np.uint8)
        res = Sample(img, np.concatenate([s.boxes, rb]).astype(np.float32),
                     np.concatenate([s.labels, r.labels]), np.concatenate([s.ignore, r.ignore]),
                     np.concatenate([s.masks, rmasks]) if rmasks is not None else None, dict(s.meta))
        res.select(_inside(res.boxes, th, tw))
        return res

    def __repr__(self) -> str:
        return (f"CachedMixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, prob={self.prob}, "
                f"max_cached_images={self.max_cached_images}, random_pop={self.random_pop})")


# ----------------------------------------------------------------------------- pipelines
@dataclass(frozen=True)
class PipelineParams:
    """Per-model-size training pipeline parameters (from configs/rtmdet/rtmdet_*_8xb32-300e_coco.py)."""

    resize_ratio_range: tuple[float, float]
    mosaic_max_cached_images: int = 40
    mosaic_random_pop: bool = True
    mixup_max_cached_images: int = 20
    mixup_random_pop: bool = True
    mixup_prob: float = 1.0
    mixup_ratio_range: tuple[float, float] = (1.0, 1.0)
    stage1_resize_scale: int = 1280  # x img_scale / 640
    stage2_resize_scale: int = 640
    # rtmdet-ins_tiny's own stage-1 pipeline keeps a plain RandomCrop (no recompute_bbox, no
    # negative crops); every other ins config, and every ins stage 2, recomputes boxes from masks
    ins_stage1_recompute_bbox: bool = True


PIPELINE_PARAMS: dict[str, PipelineParams] = {
    "tiny": PipelineParams((0.5, 2.0), mosaic_max_cached_images=20, mosaic_random_pop=False,
                           mixup_max_cached_images=10, mixup_random_pop=False, mixup_prob=0.5,
                           ins_stage1_recompute_bbox=False),
    "s": PipelineParams((0.5, 2.0)),
    "m": PipelineParams((0.1, 2.0)),
    "l": PipelineParams((0.1, 2.0)),
    "x": PipelineParams((0.1, 2.0)),
}


def pipeline_params(size: str | dict | PipelineParams) -> PipelineParams:
    if isinstance(size, PipelineParams):
        return size
    if isinstance(size, dict):
        return PipelineParams(**size)
    key = size.lower().removeprefix("rtmdet-").removeprefix("ins-").removeprefix("rtmdet_")
    if key not in PIPELINE_PARAMS:
        raise KeyError(f"unknown model size {size!r}; expected one of {sorted(PIPELINE_PARAMS)}")
    return PIPELINE_PARAMS[key]


def build_train_pipeline(size: str | dict | PipelineParams, stage: int, img_scale: int = 640,
                         with_mask: bool = False) -> Compose:
    """The reference stage-1 (mosaic/mixup) or stage-2 training pipeline for a model size.

    ``with_mask=True`` gives the RTMDet-Ins variant: RandomCrop(recompute_bbox=True,
    allow_negative_crop=True) and FilterAnnotations(min_gt_bbox_wh=(1, 1)) (after MixUp in
    stage 1, right after the crop in stage 2), as in configs/rtmdet/rtmdet-ins_*.py (except
    rtmdet-ins_tiny's stage 1, whose crop is a plain RandomCrop: see PipelineParams).
    """
    p = pipeline_params(size)
    sc = (img_scale, img_scale)
    crop = RandomCrop(sc, allow_negative_crop=with_mask, recompute_bbox=with_mask)
    tail = [YOLOXHSVRandomAug(), RandomFlip(0.5), Pad(sc, PAD_VAL)]
    if stage == 1:
        if with_mask and not p.ins_stage1_recompute_bbox:
            crop = RandomCrop(sc)
        big = p.stage1_resize_scale * img_scale // 640
        ts = [CachedMosaic(sc, pad_val=114.0, max_cached_images=p.mosaic_max_cached_images,
                           random_pop=p.mosaic_random_pop),
              RandomResize((big, big), p.resize_ratio_range, keep_ratio=True), crop, *tail,
              CachedMixUp(sc, ratio_range=p.mixup_ratio_range, max_cached_images=p.mixup_max_cached_images,
                          random_pop=p.mixup_random_pop, pad_val=114.0, prob=p.mixup_prob)]
        if with_mask:
            ts.append(FilterAnnotations((1, 1)))
    elif stage == 2:
        small = p.stage2_resize_scale * img_scale // 640
        ts = [RandomResize((small, small), p.resize_ratio_range, keep_ratio=True), crop]
        if with_mask:
            ts.append(FilterAnnotations((1, 1)))
        ts += tail
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    return Compose(ts)
