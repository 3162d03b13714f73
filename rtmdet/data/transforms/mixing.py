"""Transforms that mix a sample with cached earlier ones: Mosaic and MixUp (per worker caches)."""
from __future__ import annotations

import cv2
import numpy as np

from ..targets import resize_masks
from .sample import Sample, boxes_inside, clip_boxes

__all__ = ["CachedMosaic", "CachedMixUp"]


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
                pm = resize_masks(pm, nw, nh)
                m = np.zeros((len(pm), sh * 2, sw * 2), np.uint8)
                m[:, y1p:y2p, x1p:x2p] = pm[:, y1c:y2c, x1c:x2c]
                masks.append(m)
        out = Sample(canvas, np.concatenate(boxes).astype(np.float32), np.concatenate(labels),
                     np.concatenate(ignore), np.concatenate(masks) if with_mask else None, dict(s.meta))
        if self.bbox_clip_border:
            clip_boxes(out.boxes, sh * 2, sw * 2)
        out.select(boxes_inside(out.boxes, sh * 2, sw * 2))
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
            m[:, :rh, :rw] = resize_masks(src, rw, rh)
            rmasks = resize_masks(m, ow, oh)
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
            clip_boxes(rb, oh, ow)
        if is_flip:
            b = rb.copy()
            rb[:, 0] = ow - b[:, 2]
            rb[:, 2] = ow - b[:, 0]
        rb = rb - np.array([x_off, y_off, x_off, y_off], np.float32)
        if self.bbox_clip_border:
            clip_boxes(rb, th, tw)
        if rmasks is not None:
            pm = np.zeros((len(rmasks), max(oh, th), max(ow, tw)), np.uint8)
            pm[:, :oh, :ow] = rmasks
            rmasks = pm[:, y_off:y_off + th, x_off:x_off + tw]

        img = (0.5 * s.img.astype(np.float32) + 0.5 * cropped.astype(np.float32)).astype(np.uint8)
        res = Sample(img, np.concatenate([s.boxes, rb]).astype(np.float32),
                     np.concatenate([s.labels, r.labels]), np.concatenate([s.ignore, r.ignore]),
                     np.concatenate([s.masks, rmasks]) if rmasks is not None else None, dict(s.meta))
        res.select(boxes_inside(res.boxes, th, tw))
        return res

    def __repr__(self) -> str:
        return (f"CachedMixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, prob={self.prob}, "
                f"max_cached_images={self.max_cached_images}, random_pop={self.random_pop})")
