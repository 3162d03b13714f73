"""Transforms that mix a sample with cached earlier ones: Mosaic and MixUp (per worker caches)."""
from __future__ import annotations

import cv2
import numpy as np

from ..targets import place_targets
from .sample import Sample, boxes_inside, clip_boxes, flip_boxes

__all__ = ["CachedMosaic", "CachedMixUp", "blend_half"]


def blend_half(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The reference's ``(0.5 * a + 0.5 * b.astype(float32)).astype(uint8)`` for uint8 images
    without a float (or uint16) image: the truncated mean is ``(a & b) + ((a ^ b) >> 1)`` (the
    bits both share, plus half of those only one has), which never leaves uint8."""
    out = np.bitwise_xor(a, b)
    out >>= 1
    out += np.bitwise_and(a, b)
    return out


class _Cached:
    """What CachedMosaic and CachedMixUp share: the canvas settings, and a per-instance (so per
    worker) cache of recent samples that a sample is mixed with, with probability ``prob``."""

    def __init__(self, img_scale: tuple[int, int], pad_val: float, bbox_clip_border: bool, prob: float,
                 max_cached_images: int, random_pop: bool):
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))  # (w, h)
        self.pad_val = pad_val
        self.bbox_clip_border = bbox_clip_border
        self.prob = prob
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        self.results_cache: list[Sample] = []

    def _cache_and_draw(self, s: Sample, rng: np.random.Generator, min_cached: int) -> bool:
        """Cache a copy of ``s``; whether to mix it now: the cache holds more than ``min_cached``
        samples and the ``prob`` draw passes (made only then, as in the reference).

        Over capacity the cache pops index 0 (FIFO) or a random index; the reference draws
        ``numpy.random.randint(0, len(cache) - 1)`` whose upper bound is exclusive, so the
        just-appended entry is never popped; reproduced here.
        """
        cache = self.results_cache
        cache.append(s.copy())
        if len(cache) > self.max_cached_images:
            idx = int(rng.integers(0, len(cache) - 1)) if self.random_pop else 0
            cache.pop(idx)
        return len(cache) > min_cached and not rng.uniform(0, 1) > self.prob


class CachedMosaic(_Cached):
    """mmdet ``CachedMosaic``: 4-image mosaic on a (2h, 2w) canvas filled with ``pad_val``,
    the current sample top-left plus 3 drawn from a per-instance cache (per worker)."""

    def __init__(self, img_scale: tuple[int, int] = (640, 640), center_ratio_range=(0.5, 1.5),
                 bbox_clip_border: bool = True, pad_val: float = 114.0, prob: float = 1.0,
                 max_cached_images: int = 40, random_pop: bool = True):
        assert max_cached_images >= 4 and 0 <= prob <= 1
        super().__init__(img_scale, pad_val, bbox_clip_border, prob, max_cached_images, random_pop)
        self.center_ratio_range = center_ratio_range

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
        if not self._cache_and_draw(s, rng, min_cached=4):
            return s
        # numpy randint(0, len - 1): exclusive bound, the newest entry is never drawn (reference)
        idx = [int(rng.integers(0, len(self.results_cache) - 1)) for _ in range(3)]
        sw, sh = self.img_scale
        cx = int(rng.uniform(*self.center_ratio_range) * sw)
        cy = int(rng.uniform(*self.center_ratio_range) * sh)
        canvas = np.full((sh * 2, sw * 2) + s.img.shape[2:], self.pad_val, dtype=s.img.dtype)
        boxes, labels, ignore = [], [], []
        targets = {name: [] for name in s.targets}  # a patch lacking one contributes a blank
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
            for name, parts in targets.items():
                parts.append((patch.target_like(name, s.targets[name]), r, nw, nh, padw, padh))
        all_boxes = np.concatenate(boxes).astype(np.float32)
        if self.bbox_clip_border:
            clip_boxes(all_boxes, sh * 2, sw * 2)
        keep = boxes_inside(all_boxes, sh * 2, sw * 2)
        # the instances that end up off the canvas are left out before their targets are
        # resized and placed
        ends = np.cumsum([len(b) for b in boxes])
        merged = {name: place_targets(type(s.targets[name]), [
            (t.select(keep[end - len(t):end]).resize(r, r, nw, nh), padw, padh)
            for (t, r, nw, nh, padw, padh), end in zip(parts, ends)], sw * 2, sh * 2)
            for name, parts in targets.items()}
        return Sample(canvas, all_boxes[keep], np.concatenate(labels)[keep], np.concatenate(ignore)[keep],
                      merged, dict(s.meta))

    def __repr__(self) -> str:
        return (f"CachedMosaic(img_scale={self.img_scale}, pad_val={self.pad_val}, prob={self.prob}, "
                f"max_cached_images={self.max_cached_images}, random_pop={self.random_pop})")


class CachedMixUp(_Cached):
    """mmdet ``CachedMixUp``: blend 0.5/0.5 with a cached sample letterboxed into ``img_scale``,
    jittered by ``ratio_range``, maybe flipped, randomly cropped to the current image size."""

    def __init__(self, img_scale: tuple[int, int] = (640, 640), ratio_range=(0.5, 1.5),
                 flip_ratio: float = 0.5, pad_val: float = 114.0, max_iters: int = 15,
                 bbox_clip_border: bool = True, max_cached_images: int = 20,
                 random_pop: bool = True, prob: float = 1.0):
        assert max_cached_images >= 2 and 0 <= prob <= 1
        super().__init__(img_scale, pad_val, bbox_clip_border, prob, max_cached_images, random_pop)
        self.ratio_range = ratio_range
        self.flip_ratio = flip_ratio
        self.max_iters = max_iters

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        if not self._cache_and_draw(s, rng, min_cached=1):
            return s
        cache = self.results_cache
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
        if is_flip:  # cv2.flip: one pass (copying a reversed view is ~40x slower)
            out = cv2.flip(out, 1)
        th, tw = s.img.shape[:2]
        padded = np.full((max(oh, th), max(ow, tw)) + out.shape[2:], self.pad_val, np.uint8)
        padded[:oh, :ow] = out
        y_off = int(rng.integers(0, padded.shape[0] - th)) if padded.shape[0] > th else 0
        x_off = int(rng.integers(0, padded.shape[1] - tw)) if padded.shape[1] > tw else 0
        cropped = padded[y_off:y_off + th, x_off:x_off + tw]

        scale = ratio * jit
        rb = (r.boxes * np.float32(scale)).astype(np.float32)
        if self.bbox_clip_border:
            clip_boxes(rb, oh, ow)
        if is_flip:
            flip_boxes(rb, ow)
        rb = rb - np.array([x_off, y_off, x_off, y_off], np.float32)
        if self.bbox_clip_border:
            clip_boxes(rb, th, tw)
        all_boxes = np.concatenate([s.boxes, rb]).astype(np.float32)
        keep = boxes_inside(all_boxes, th, tw)
        n = len(s.boxes)  # the instances left out are dropped before their targets move
        targets = {}  # each target takes the image's path: letterbox, jitter, flip, crop
        for name, t in s.targets.items():
            rt = r.target_like(name, t).select(keep[n:])
            rt = rt.resize(ratio, ratio, rw, rh).translate(0, 0, sw, sh).resize(jit, jit, ow, oh)
            if is_flip:
                rt = rt.flip(ow, oh)
            targets[name] = type(t).concat([t.select(keep[:n]), rt.translate(-x_off, -y_off, tw, th)])

        img = blend_half(s.img, cropped)
        return Sample(img, all_boxes[keep], np.concatenate([s.labels, r.labels])[keep],
                      np.concatenate([s.ignore, r.ignore])[keep], targets, dict(s.meta))

    def __repr__(self) -> str:
        return (f"CachedMixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, prob={self.prob}, "
                f"max_cached_images={self.max_cached_images}, random_pop={self.random_pop})")
