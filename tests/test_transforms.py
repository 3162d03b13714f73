"""Tests for rtmdet.data.transforms and rtmdet.data.loader.

Box consistency is checked against the pixels: every box is drawn as a white filled rectangle on
a black image; after a transform (photometric HSV removed) every bright pixel must lie inside
some box (+-TOL px) and every box large enough to see must be tightly enclosed by the bright
pixels it contains (each edge within TOL px).
"""
from __future__ import annotations

import copy
import math
import zlib

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmdet.data.loader import TrainDataset, build_train_loader, collate, decode_rle, record_masks
from rtmdet.data.partial_resize import resize_top_left
from rtmdet.data.records import DetectionDataset, ImageRecord
from rtmdet.data.targets import MaskTarget
from rtmdet.data.letterbox import letterbox
from rtmdet.data.transforms import (
    CachedMixUp, CachedMosaic, Compose, FilterAnnotations, Pad, RandomCrop,
    RandomFlip, RandomResize, Resize, Sample, YOLOXHSVRandomAug, build_train_pipeline, pipeline_params,
)
from rtmdet.data.transforms.mixing import blend_half
from rtmdet.data.transforms.photometric import hsv_shift_per_pixel

TOL = 2
BRIGHT = 120  # white 255 mixed 0.5/0.5 with black 0 is 127; pad 114 and black stay below


# ----------------------------------------------------------------------------- helpers
def make_sample(rng: np.random.Generator, h: int | None = None, w: int | None = None,
                n: int | None = None, min_box: int = 24) -> Sample:
    h = int(rng.integers(120, 480)) if h is None else h
    w = int(rng.integers(120, 480)) if w is None else w
    n = int(rng.integers(1, 5)) if n is None else n
    img = np.zeros((h, w, 3), np.uint8)
    boxes, masks = [], []
    for _ in range(n):
        bw = int(rng.integers(min_box, max(min_box + 1, w // 2)))
        bh = int(rng.integers(min_box, max(min_box + 1, h // 2)))
        x1, y1 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        img[y1:y1 + bh, x1:x1 + bw] = 255
        boxes.append([x1, y1, x1 + bw, y1 + bh])
        m = np.zeros((h, w), np.uint8)
        m[y1:y1 + bh, x1:x1 + bw] = 1
        masks.append(m)
    return Sample(img, np.array(boxes, np.float32), rng.integers(0, 80, n), targets={"masks": MaskTarget(np.stack(masks))})


def assert_boxes_match_pixels(s: Sample, tol: int = TOL, min_check: float = 6.0) -> None:
    img = s.img if s.img.ndim == 2 else s.img.max(axis=2)
    bright = img > BRIGHT
    h, w = bright.shape
    b = s.boxes
    assert b.dtype == np.float32 and b.shape[1] == 4
    assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0) and np.all(b[:, 2] <= w) and np.all(b[:, 3] <= h)
    assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1]), "degenerate box survived"
    covered = np.zeros_like(bright)
    for x1, y1, x2, y2 in b:
        covered[max(0, math.floor(y1) - tol):math.ceil(y2) + tol, max(0, math.floor(x1) - tol):math.ceil(x2) + tol] = True
    stray = bright & ~covered
    assert not stray.any(), f"{stray.sum()} bright pixels outside every box, e.g. {np.argwhere(stray)[:3]}"
    for x1, y1, x2, y2 in b:
        if x2 - x1 < min_check or y2 - y1 < min_check:
            continue
        xi1, yi1, xi2, yi2 = math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)
        ys, xs = np.nonzero(bright[yi1:yi2, xi1:xi2])
        assert len(xs), f"box {(x1, y1, x2, y2)} contains no drawn pixel"
        got = np.array([xs.min() + xi1, ys.min() + yi1, xs.max() + xi1 + 1, ys.max() + yi1 + 1])
        assert np.all(np.abs(got - np.array([x1, y1, x2, y2])) <= tol), f"box {(x1, y1, x2, y2)} vs pixels {got}"


def assert_masks_match_boxes(s: Sample, tol: int = TOL) -> None:
    assert s.masks is not None and s.masks.shape == (len(s.boxes),) + s.img.shape[:2]
    for m, (x1, y1, x2, y2) in zip(s.masks, s.boxes):
        if not m.any():
            continue
        ys, xs = np.nonzero(m)
        got = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.all(np.abs(got - np.array([x1, y1, x2, y2])) <= tol), (got, (x1, y1, x2, y2))


def no_hsv(p: Compose) -> Compose:
    return Compose([t for t in p.transforms if not isinstance(t, YOLOXHSVRandomAug)])


# ----------------------------------------------------------------------------- letterbox
def test_letterbox_known_values():
    img = np.full((720, 1280, 3), 7, np.uint8)
    out, sf, _ = letterbox(img)
    assert out.shape == (640, 640, 3) and sf == (0.5, 0.5)
    assert np.all(out[:360] == 7) and np.all(out[360:] == 114)
    out, sf, _ = letterbox(np.full((375, 500, 3), 7, np.uint8))  # 500x375 -> 640x480
    assert sf == (640 / 500, 480 / 375) and np.all(out[:480] == 7) and np.all(out[480:] == 114)
    out, sf, _ = letterbox(np.full((3, 1000, 3), 7, np.uint8))  # 3 * 0.64 = 1.92 -> int(2.42) = 2 rows
    assert sf == (0.64, 2 / 3) and np.all(out[:2] == 7) and np.all(out[2:] == 114)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 1500), w=st.integers(1, 1500), tw=st.sampled_from([320, 640, 416]),
       th=st.sampled_from([320, 640, 480]))
def test_letterbox_size_and_scale(h, w, tw, th):
    img = np.random.default_rng(h * 7 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out, (ws, hs), _ = letterbox(img, (th, tw))
    # independent: exact rational scale, round half up
    from fractions import Fraction
    s = min(Fraction(th, h), Fraction(tw, w))
    nw, nh = math.floor(w * s + Fraction(1, 2)), math.floor(h * s + Fraction(1, 2))
    nw, nh = max(1, nw), max(1, nh)  # a 0-pixel side (reference would fail in cv2) is kept at 1
    assert out.shape == (th, tw, 3)
    assert (ws, hs) == pytest.approx((nw / w, nh / h), abs=1e-12)
    assert np.all(out[nh:] == 114) and np.all(out[:, nw:] == 114)
    np.testing.assert_array_equal(out[:nh, :nw], cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
                                  if (nw, nh) != (w, h) else img)


# ----------------------------------------------------------------------------- single transforms
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_flip_involution_and_boxes(seed):
    rng = np.random.default_rng(seed)
    s = make_sample(rng)
    f1 = RandomFlip.flip(s.copy())
    assert_boxes_match_pixels(f1)
    assert_masks_match_boxes(f1)
    f2 = RandomFlip.flip(f1.copy())
    np.testing.assert_array_equal(f2.img, s.img)
    np.testing.assert_array_equal(f2.boxes, s.boxes)
    np.testing.assert_array_equal(f2.masks, s.masks)
    w = s.img.shape[1]
    np.testing.assert_allclose(f1.boxes[:, [0, 2]], w - s.boxes[:, [2, 0]])


def test_random_flip_probability():
    rng = np.random.default_rng(0)
    s = make_sample(rng)
    flips = [RandomFlip(0.5)(s.copy(), rng).meta.get("flip", False) for _ in range(400)]
    assert 150 < sum(flips) < 250
    assert not any(RandomFlip(0.0)(s.copy(), rng).meta.get("flip", False) for _ in range(20))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), sw=st.integers(64, 900), sh=st.integers(64, 900), keep=st.booleans())
def test_resize_box_scaling(seed, sw, sh, keep):
    rng = np.random.default_rng(seed)
    s = make_sample(rng)
    h, w = s.img.shape[:2]
    out = Resize((sw, sh), keep_ratio=keep)(s.copy())
    if keep:  # mmcv rescale_size: (long, short) edge limits, round half up
        f = min(max(sw, sh) / max(h, w), min(sw, sh) / min(h, w))
        nw, nh = int(w * f + 0.5), int(h * f + 0.5)
    else:
        nw, nh = sw, sh
    assert out.img.shape[:2] == (nh, nw)
    np.testing.assert_allclose(out.boxes, s.boxes * np.array([nw / w, nh / h] * 2, np.float32), rtol=1e-6)
    assert out.meta["scale_factor"] == (nw / w, nh / h)
    assert_boxes_match_pixels(out)
    assert_masks_match_boxes(out)


def test_random_resize_scale_sampling():
    rr = RandomResize((1280, 1280), (0.1, 2.0))
    rng = np.random.default_rng(3)
    scales = [rr.sample_scale(rng) for _ in range(2000)]
    assert all(a == b for a, b in scales)
    v = np.array([a for a, _ in scales])
    assert v.min() >= 128 and v.max() < 2560 and v.min() < 200 and v.max() > 2400
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    assert rr.sample_scale(rng1)[0] == int(1280 * (rng2.random() * 1.9 + 0.1))


@pytest.mark.parametrize("seed", range(6))
def test_random_crop_consistency(seed):
    rng = np.random.default_rng(seed)
    s = make_sample(rng, h=int(rng.integers(300, 900)), w=int(rng.integers(300, 900)), n=6)
    out = RandomCrop((256, 256), allow_negative_crop=True)(s.copy(), rng)
    assert out.img.shape[:2] == (min(256, s.img.shape[0]), min(256, s.img.shape[1]))
    assert_boxes_match_pixels(out, min_check=1)
    assert_masks_match_boxes(out)


def test_random_crop_removes_outside_and_drops_empty():
    img = np.zeros((100, 400, 3), np.uint8)
    s = Sample(img, [[0, 0, 20, 20], [350, 10, 390, 50]], [1, 2],
               targets={"masks": MaskTarget(np.zeros((2, 100, 400), np.uint8))})
    rng = np.random.default_rng(0)
    out = RandomCrop((100, 100), allow_negative_crop=True)(s.copy(), rng)
    # the crop window is 100 wide inside a 400 wide image: at most one of the boxes survives,
    # and a surviving box is clipped into the window
    assert len(out.boxes) <= 1 and out.masks.shape[0] == len(out.boxes)
    assert np.all(out.boxes[:, 2] <= 100)
    results = [RandomCrop((100, 100))(s.copy(), np.random.default_rng(k)) for k in range(30)]
    assert any(r is None for r in results) and any(r is not None for r in results)
    assert all(r is None or len(r.boxes) >= 1 for r in results)
    # an image without boxes is always dropped by the reference RandomCrop (allow_negative_crop=False)
    assert RandomCrop((64, 64))(Sample(img), rng) is None
    assert len(RandomCrop((64, 64), allow_negative_crop=True)(Sample(img), rng).boxes) == 0


def test_random_crop_recompute_bbox_from_masks():
    img = np.zeros((50, 50, 3), np.uint8)
    m = np.zeros((1, 50, 50), np.uint8)
    m[0, 10:20, 5:30] = 1
    s = Sample(img, [[0, 0, 40, 40]], [0], targets={"masks": MaskTarget(m)})
    out = RandomCrop((50, 50), recompute_bbox=True)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.boxes, [[5, 10, 30, 20]])


def test_filter_annotations():
    s = Sample(np.zeros((50, 50, 3), np.uint8), [[0, 0, 1, 10], [0, 0, 10, 10], [5, 5, 7, 5.5]], [0, 1, 2])
    out = FilterAnnotations((1, 1))(s.copy())
    np.testing.assert_array_equal(out.labels, [1])
    assert FilterAnnotations((1, 1))(Sample(np.zeros((5, 5, 3), np.uint8), [[0, 0, 1, 1]], [0])) is None
    assert len(FilterAnnotations((1, 1))(Sample(np.zeros((5, 5, 3), np.uint8))).boxes) == 0


def test_pad_value_and_shape():
    rng = np.random.default_rng(1)
    s = make_sample(rng, h=300, w=500)
    out = Pad((640, 640))(s.copy())
    assert out.img.shape == (640, 640, 3) and out.masks.shape[1:] == (640, 640)
    assert np.all(out.img[300:] == 114) and np.all(out.img[:, 500:] == 114)
    np.testing.assert_array_equal(out.img[:300, :500], s.img)
    assert not out.masks[:, 300:].any()
    assert_boxes_match_pixels(out)
    with pytest.raises(ValueError):
        Pad((100, 100))(s.copy())


def test_hsv_keeps_geometry_and_is_bounded():
    rng = np.random.default_rng(2)
    gray = Sample(np.full((40, 60, 3), 114, np.uint8), [[1, 2, 30, 20]], [3])
    same = YOLOXHSVRandomAug(0, 0, 0)(gray.copy(), rng)
    np.testing.assert_array_equal(same.img, gray.img)
    changed = 0
    for _ in range(30):
        out = YOLOXHSVRandomAug(hue_delta=5, saturation_delta=30, value_delta=30)(gray.copy(), rng)
        np.testing.assert_array_equal(out.boxes, gray.boxes)
        d = out.img.astype(int) - 114
        assert np.abs(d).max() <= 30 and out.img.shape == gray.img.shape
        changed += int(d.any())
    assert 0 < changed < 30
    a = YOLOXHSVRandomAug()(make_sample(np.random.default_rng(0)), np.random.default_rng(9))
    b = YOLOXHSVRandomAug()(make_sample(np.random.default_rng(0)), np.random.default_rng(9))
    np.testing.assert_array_equal(a.img, b.img)


def _hsv_reference(img, rng, deltas=(5, 30, 30)):
    """YOLOXHSVRandomAug as mmdet writes it: int16 arithmetic on every pixel."""
    gains = rng.uniform(-1, 1, 3) * np.array(deltas, np.float64)
    gains *= rng.integers(0, 2, 3)
    gains = gains.astype(np.int16)
    return hsv_shift_per_pixel(img, gains), gains


def test_hsv_equals_the_per_pixel_formula():
    # a million random colours, the greys and the saturated edges (one channel 0 or 255:
    # hue wrap, saturation/value clipping) under gains with each zero pattern
    b, g = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    edges = [np.stack([b, g, np.full_like(b, r)], -1)[:, :, np.roll([0, 1, 2], k)] for r in (0, 255) for k in range(3)]
    grey = np.repeat(np.arange(256)[:, None], 3, 1)
    every = np.concatenate([np.random.default_rng(0).integers(0, 256, (2**20, 3)), grey,
                            *[e.reshape(-1, 3) for e in edges]]).astype(np.uint8).reshape(-1, 128, 3)
    patterns = set()
    for seed in range(40):
        want, gains = _hsv_reference(every, np.random.default_rng(seed))
        got = YOLOXHSVRandomAug()(Sample(every.copy()), np.random.default_rng(seed)).img
        np.testing.assert_array_equal(got, want)
        patterns.add(tuple(gains != 0))
        if len(patterns) == 8 and seed >= 12:
            break
    assert len(patterns) == 8  # all gains zero, each one alone, each pair, all three


# ----------------------------------------------------------------------------- mosaic / mixup
def test_mosaic_cache_and_consistency():
    rng = np.random.default_rng(4)
    mosaic = CachedMosaic((320, 320), max_cached_images=6, random_pop=False)
    outs = [mosaic(make_sample(rng), rng) for _ in range(10)]
    assert len(mosaic.results_cache) == 6
    # until the cache holds more than 4 images the sample passes through unchanged
    assert all(o.img.shape[:2] != (640, 640) for o in outs[:4])
    for o in outs[4:]:
        assert o.img.shape == (640, 640, 3)
        assert (o.img == 114).any()  # the canvas is filled with the pad value
        assert_boxes_match_pixels(o)
        assert_masks_match_boxes(o)


def test_mosaic_fifo_vs_random_pop():
    rng = np.random.default_rng(0)
    fifo = CachedMosaic((64, 64), max_cached_images=4, random_pop=False)
    samples = [Sample(np.full((32, 32, 3), i, np.uint8)) for i in range(8)]
    for s in samples:
        fifo(s, rng)
    assert [int(c.img[0, 0, 0]) for c in fifo.results_cache] == [4, 5, 6, 7]
    kept_sets = set()
    for seed in range(10):
        rnd = CachedMosaic((64, 64), max_cached_images=4, random_pop=True)
        r = np.random.default_rng(seed)
        for s in samples:
            rnd(s, r)
        kept = [int(c.img[0, 0, 0]) for c in rnd.results_cache]
        assert kept[-1] == 7 and len(kept) == 4  # the newest is never popped
        kept_sets.add(tuple(kept))
    assert len(kept_sets) > 1 and kept_sets != {(4, 5, 6, 7)}


def test_mixup_consistency_and_blend():
    rng = np.random.default_rng(6)
    pad = Pad((320, 320))
    mix = CachedMixUp((320, 320), ratio_range=(0.5, 1.5), max_cached_images=5)
    n_mixed = 0
    for i in range(14):
        s = pad(make_sample(rng, h=int(rng.integers(100, 320)), w=int(rng.integers(100, 320))))
        n0 = len(s.boxes)
        out = mix(s.copy(), rng)
        assert out.img.shape == (320, 320, 3) and out.img.dtype == np.uint8
        if i == 0:
            assert out.img is s.img or np.array_equal(out.img, s.img)
        if not np.array_equal(out.img, s.img):
            n_mixed += 1
            # 0.5/0.5 blend: a pixel that was white stays >= 127, black -> <= 127
            assert np.all(out.img[s.img == 255] >= 127) and np.all(out.img[s.img == 0] <= 127)
            np.testing.assert_array_equal(out.boxes[:n0], s.boxes)
        assert_boxes_match_pixels(out)
        assert_masks_match_boxes(out)
    assert n_mixed >= 8


def test_blend_half_equals_the_float_blend():
    # every pair of uint8 values, against the reference's float32 0.5/0.5 blend truncated
    a, b = (v.astype(np.uint8) for v in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    want = (0.5 * a + 0.5 * b.astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(blend_half(a, b), want)
    img = np.stack([a, b, a], -1)  # strided views (a crop, a flip) as MixUp passes them
    x, y = img[::2, ::-1], img[1::2, :, ::-1]
    np.testing.assert_array_equal(blend_half(x, y), (0.5 * x + 0.5 * y.astype(np.float32)).astype(np.uint8))
    assert blend_half(x, y).dtype == np.uint8


def test_mixup_equals_the_reference_arithmetic(monkeypatch):
    # the same draws through the reference's own operations (a reversed view for the flip, the
    # float32 blend) give the same samples as cv2.flip and blend_half
    import types

    from rtmdet.data.transforms import mixing

    def run():
        rng = np.random.default_rng(11)
        mix = CachedMixUp((320, 320), ratio_range=(0.5, 1.5), max_cached_images=6)
        outs = []
        for _ in range(16):
            s = Pad((320, 320))(make_sample(rng, h=int(rng.integers(100, 320)), w=int(rng.integers(100, 320))))
            o = mix(s, rng)
            outs.append((o.img.copy(), o.boxes.copy(), o.labels.copy()))
        return outs

    fast = run()
    flips = []
    ref_cv2 = types.SimpleNamespace(resize=cv2.resize, INTER_LINEAR=cv2.INTER_LINEAR,
                                    flip=lambda a, code: flips.append(code) or a[:, ::-1])
    monkeypatch.setattr(mixing, "cv2", ref_cv2)
    monkeypatch.setattr(mixing, "blend_half", lambda a, b: (0.5 * a + 0.5 * b.astype(np.float32)).astype(np.uint8))
    ref = run()
    assert len(flips) >= 3
    for (ia, ba, la), (ib, bb, lb) in zip(fast, ref, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(la, lb)


def test_mosaic_and_mixup_drop_instances_before_moving_their_targets(monkeypatch):
    # both decide from the boxes which instances leave the image and never resize or place those
    # instances' targets: the samples must equal keeping every instance, then dropping them
    from rtmdet.data.transforms import mixing

    def run(make):
        rng = np.random.default_rng(3)
        t = make()
        return [t(make_sample(rng, n=int(rng.integers(1, 7)), min_box=4), rng) for _ in range(30)]

    inside = mixing.boxes_inside
    for make in (lambda: CachedMosaic((160, 160), max_cached_images=6),
                 lambda: CachedMixUp((320, 320), ratio_range=(0.5, 1.5), max_cached_images=6)):
        fast = run(make)
        monkeypatch.setattr(mixing, "boxes_inside", lambda b, h, w: np.ones(len(b), bool))
        every = run(make)
        monkeypatch.setattr(mixing, "boxes_inside", inside)
        dropped = 0
        for a, b in zip(fast, every, strict=True):
            keep = inside(b.boxes, *b.img.shape[:2])
            dropped += int((~keep).sum())
            b.select(keep)
            np.testing.assert_array_equal(a.img, b.img)
            for x, y in ((a.boxes, b.boxes), (a.labels, b.labels), (a.ignore, b.ignore), (a.masks, b.masks)):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
        assert dropped >= 5, dropped


def test_mixup_prob_zero_is_identity():
    rng = np.random.default_rng(0)
    mix = CachedMixUp((128, 128), prob=0.0, max_cached_images=3)
    for _ in range(5):
        s = Pad((128, 128))(make_sample(rng, h=100, w=100))
        out = mix(s.copy(), rng)
        np.testing.assert_array_equal(out.img, s.img)
    assert len(mix.results_cache) == 3


# ----------------------------------------------------------------------------- pipelines
def _textured(rng, h, w):
    """Noise with smooth and sharp regions (bilinear rounding shows on both)."""
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[: h // 2] = cv2.GaussianBlur(img[: h // 2], (0, 0), 2)
    return img


def test_resize_top_left_equals_the_whole_resize():
    rng = np.random.default_rng(5)
    cut = 0
    for trial in range(150):
        h, w = [(1280, 1280), (int(rng.integers(2, 700)), int(rng.integers(2, 700))), (480, 640)][trial % 3]
        img = _textured(rng, h, w)
        f = rng.random() * 1.9 + 0.1
        nw, nh = max(1, int(w * f + 0.5)), max(1, int(h * f + 0.5))
        full = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        need_w, need_h = int(rng.integers(1, nw + 1)), int(rng.integers(1, nh + 1))
        if trial % 7 == 0:
            need_w = nw  # the far edge asked for
        block = resize_top_left(img, (nw, nh), (need_w, need_h))
        assert block.shape[0] >= need_h and block.shape[1] >= need_w
        np.testing.assert_array_equal(block[:need_h, :need_w], full[:need_h, :need_w], err_msg=str((h, w, nw, nh)))
        cut += block.shape[:2] != full.shape[:2]
        # masks (nearest neighbour, OpenCV's indices): any window, gathered
        masks = np.stack([(img[..., c] > 127).astype(np.uint8) for c in range(3)])
        full = np.stack([cv2.resize(m, (nw, nh), interpolation=cv2.INTER_NEAREST) for m in masks])
        x0, y0 = int(rng.integers(0, nw)), int(rng.integers(0, nh))
        if trial % 5 == 0:
            x0, y0 = nw - min(nw, 40), nh - min(nh, 40)  # the far edge (clamped source index)
        cw, ch = int(rng.integers(1, nw - x0 + 1)), int(rng.integers(1, nh - y0 + 1))
        got = MaskTarget(masks).resize_window(nw / w, nh / h, nw, nh, (x0, y0, cw, ch)).as_array()
        np.testing.assert_array_equal(got, full[:, y0:y0 + ch, x0:x0 + cw], err_msg=str((h, w, nw, nh)))
    assert cut >= 60  # most draws resize only a part


@pytest.mark.parametrize("size,stage,targets", [("tiny", 1, False), ("l", 1, False), ("s", 2, False),
                                                ("ins-s", 1, True), ("ins-tiny", 2, True)])
def test_fused_resize_crop_equals_the_two_transforms(size, stage, targets):
    # Compose runs RandomResize + RandomCrop as one step that resizes only what the crop keeps;
    # the same draws must give the same samples as the two transforms one after the other
    pipe = build_train_pipeline(size, stage, 320)
    names = [n for n, _ in pipe.steps()]
    assert "RandomResize+RandomCrop" in names and "RandomResize" not in names

    def run(fused):
        rng = np.random.default_rng(7)
        p = copy.deepcopy(pipe)
        outs = []
        for _ in range(30):
            s = make_sample(rng, h=int(rng.integers(120, 420)), w=int(rng.integers(120, 420)))
            s.img = np.maximum(s.img, _textured(rng, *s.img.shape[:2]) // 2)
            if not targets:
                s.targets = {}
            if fused:
                o = p(s, rng)
            else:
                o = s
                for t in p.transforms:
                    o = t(o, rng)
                    if o is None:
                        break
            outs.append(o)
        return outs

    fast, slow = run(True), run(False)
    kept = 0
    for a, b in zip(fast, slow, strict=True):
        assert (a is None) == (b is None)
        if a is None:
            continue
        kept += 1
        np.testing.assert_array_equal(a.img, b.img)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.targets.keys() == b.targets.keys()
        for name in a.targets:
            np.testing.assert_array_equal(a.targets[name].as_array(), b.targets[name].as_array())
    assert kept >= 15


@pytest.mark.parametrize("size,stage", [("ins-s", 1), ("ins-tiny", 2), ("ins-l", 1)])
def test_masks_through_the_pipelines_equal_dense_bitmaps(size, stage):
    # the RTMDet-Ins pipelines with MaskTarget (crops, windows, instances dropped early) and with
    # full bitmaps moved the plain way (helpers.DenseMasks): the same samples
    from helpers import DenseMasks, same_pipeline_samples

    def make(rng, kind):
        s = make_sample(rng, h=int(rng.integers(120, 420)), w=int(rng.integers(120, 420)),
                        n=int(rng.integers(1, 8)), min_box=6)
        s.targets = {"masks": kind(s.targets["masks"].as_array())}
        return s

    def check(a, b):
        np.testing.assert_array_equal(a.masks, b.masks)
    assert same_pipeline_samples(build_train_pipeline(size, stage, 320), make, (MaskTarget, DenseMasks),
                                 30, 12, check) >= 60


def test_pipeline_params_match_configs():
    assert pipeline_params("tiny").resize_ratio_range == (0.5, 2.0)
    assert pipeline_params("s").resize_ratio_range == (0.5, 2.0)
    for k in "mlx":
        assert pipeline_params(k).resize_ratio_range == (0.1, 2.0)
    t = build_train_pipeline("tiny", 1).transforms
    assert [type(x).__name__ for x in t] == ["CachedMosaic", "RandomResize", "RandomCrop", "YOLOXHSVRandomAug",
                                           "RandomFlip", "Pad", "CachedMixUp"]
    assert (t[0].max_cached_images, t[0].random_pop, t[0].pad_val, t[0].img_scale) == (20, False, 114.0, (640, 640))
    assert (t[6].max_cached_images, t[6].random_pop, t[6].prob, t[6].ratio_range) == (10, False, 0.5, (1.0, 1.0))
    assert t[1].scale == (1280, 1280) and t[2].crop_size == (640, 640) and not t[2].allow_negative_crop
    t = build_train_pipeline("l", 1).transforms
    assert (t[0].max_cached_images, t[0].random_pop) == (40, True)
    assert (t[6].max_cached_images, t[6].random_pop, t[6].prob) == (20, True, 1.0)
    t = build_train_pipeline("m", 2).transforms
    assert [type(x).__name__ for x in t] == ["RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "RandomFlip", "Pad"]
    assert t[0].scale == (640, 640) and t[0].ratio_range == (0.1, 2.0) and t[4].size == (640, 640)
    ins = build_train_pipeline("ins-s", 2).transforms
    assert ins[1].recompute_bbox and ins[1].allow_negative_crop and isinstance(ins[2], FilterAnnotations)
    with pytest.raises(KeyError):
        build_train_pipeline("huge", 1)


@pytest.mark.parametrize("size,stage", [("tiny", 1), ("s", 1), ("l", 1), ("x", 2), ("s", 2)])
def test_pipeline_boxes_consistent(size, stage, seed=None):
    # a seed per case that is the same in every process (hash() of a str is salted per process)
    rng = np.random.default_rng(zlib.crc32(f"{size}-{stage}".encode()) if seed is None else seed)
    pipe = no_hsv(build_train_pipeline(size, stage))
    mixup = pipe.transforms[-1] if stage == 1 else None
    before_mixup = Compose(pipe.transforms[:-1]) if stage == 1 else pipe
    n_out = 0
    for _ in range(12):
        pre = before_mixup(make_sample(rng, min_box=40), rng)
        if pre is None:
            continue
        n_out += 1
        assert pre.img.shape == (640, 640, 3) and pre.img.dtype == np.uint8
        assert len(pre.boxes) == len(pre.labels) == len(pre.ignore)
        # stage 1: the reference Mosaic resizes to int(w * r) but scales boxes by r (< 1 px off),
        # and RandomResize may then double that; allow 2 px more than for exact geometry
        assert_boxes_match_pixels(pre, tol=TOL + 2 if stage == 1 else TOL)
        if mixup is not None:
            out = mixup(pre.copy(), rng)
            assert out.img.shape == (640, 640, 3)
            n = len(pre.boxes)
            np.testing.assert_array_equal(out.boxes[:n], pre.boxes)  # checked on pre's pixels above
            if out.img is not pre.img and not np.array_equal(out.img, pre.img):
                # the mixed-in image, recovered from the blend floor((a + b) / 2) (to 1 level): its
                # boxes are checked on its own pixels (in the blend, the blurred edges of an up to
                # ~13x upscaled image fall below the threshold ~0.45 x 13 px early)
                mixed = np.clip(2 * out.img.astype(np.int16) - pre.img, 0, 255).astype(np.uint8)
                # the cached image was checked with TOL + 2, then resized by up to 1.5x
                assert_boxes_match_pixels(Sample(mixed, out.boxes[n:], out.labels[n:]), tol=TOL + 4)
    assert n_out >= 6


def test_pipeline_with_masks_consistent():
    rng = np.random.default_rng(11)
    for stage in (1, 2):
        pipe = no_hsv(build_train_pipeline("ins-s", stage))
        for _ in range(8):
            out = pipe(make_sample(rng, min_box=40), rng)
            if out is None:
                continue
            assert out.masks.shape == (len(out.boxes), 640, 640)
            assert_masks_match_boxes(out)


def test_stage2_pad_region_is_114():
    rng = np.random.default_rng(0)
    pipe = build_train_pipeline("s", 2)
    rr = pipe.transforms[0]
    for _ in range(10):
        s = make_sample(rng, h=200, w=300)
        state = rng.bit_generator.state
        scale = rr.sample_scale(rng)
        rng.bit_generator.state = state
        out = pipe(s, rng)
        if out is None:
            continue
        f = min(scale[0] / 300, scale[1] / 200)
        nw, nh = min(640, int(300 * f + 0.5)), min(640, int(200 * f + 0.5))
        assert np.all(out.img[nh:] == 114) and np.all(out.img[:, nw:] == 114)


def test_pipeline_determinism():
    def run(seed):
        rng = np.random.default_rng(seed)
        data_rng = np.random.default_rng(123)
        pipe = build_train_pipeline("s", 1)
        outs = [pipe(make_sample(data_rng), rng) for _ in range(8)]
        return [(o.img, o.boxes) if o is not None else None for o in outs]

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x[0], y[0])
            np.testing.assert_array_equal(x[1], y[1])
    assert any(x is not None and y is not None and not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


# ----------------------------------------------------------------------------- loader
def _write_dataset(tmp_path, n=10, seed=0) -> DetectionDataset:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        s = make_sample(rng, min_box=30)
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), s.img)
        segs = [[[b[0], b[1], b[2] - 1, b[1], b[2] - 1, b[3] - 1, b[0], b[3] - 1]] for b in s.boxes.tolist()]
        crowd = np.zeros(len(s.boxes), bool)
        crowd[0] = i == 3
        recs.append(ImageRecord(p.name, s.img.shape[1], s.img.shape[0], i, s.boxes, s.labels % 3, crowd, segs))
    return DetectionDataset(recs, ["a", "b", "c"], [1, 2, 3], root=str(tmp_path))


def test_train_dataset_and_collate(tmp_path):
    ds = TrainDataset(_write_dataset(tmp_path), model_size="tiny", seed=1)
    batch = collate([ds[i] for i in range(4)])
    # uint8 (converted on the device), a channels-last view of the HWC pixels
    assert batch["imgs"].shape == (4, 3, 640, 640) and batch["imgs"].dtype == torch.uint8
    assert batch["imgs"].is_contiguous(memory_format=torch.channels_last)
    assert batch["imgs"].max() > 1  # not normalised
    assert len(batch["boxes"]) == 4 and all(b.shape[1] == 4 for b in batch["boxes"])
    assert all(b.dtype == torch.int64 for b in batch["labels"])
    ds.set_stage(2)
    assert ds.pipeline is ds.pipelines[2] and type(ds.pipeline.transforms[0]).__name__ == "RandomResize"
    with pytest.raises(ValueError):
        ds.set_stage(3)


def test_train_dataset_masks_and_crowd(tmp_path):
    dset = _write_dataset(tmp_path)
    rec = dset.records[0]
    m = record_masks(rec, rec.height, rec.width)
    for mi, (x1, y1, x2, y2) in zip(m, rec.boxes):
        ys, xs = np.nonzero(mi)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
    rle = {"size": [3, 2], "counts": [1, 2, 3]}  # column-major: col0 = 0,1,1; col1 = 0,0,0
    np.testing.assert_array_equal(decode_rle(rle), [[0, 0], [1, 0], [1, 0]])
    ds = TrainDataset(dset, pipeline=Compose([Pad((640, 640))]), pipeline_stage2=Compose([]), targets=("masks",))
    item = ds[3]  # record 3 has its first box marked iscrowd -> reported as ignored
    assert len(item["ignored_boxes"]) == 1 and len(item["boxes"]) == len(dset.records[3].boxes) - 1
    assert item["masks"].shape == (len(item["boxes"]), 640, 640)


def test_train_dataset_ignores_instances_without_a_mask(tmp_path):
    # mmdet's LoadAnnotations: an instance whose segmentation gives no polygon is ignored
    dset = _write_dataset(tmp_path, n=4)
    rec = dset.records[2]
    rec.segmentations[1] = []  # no polygon
    rec.segmentations[2] = [[1, 2, 3, 4]]  # too short to be one
    ds = TrainDataset(dset, pipeline=Compose([Pad((640, 640))]), pipeline_stage2=Compose([]), targets=("masks",))
    assert ds.target_loaders["masks"].kind == "polygons"
    item = ds[2]
    np.testing.assert_array_equal(item["ignored_boxes"].numpy(), rec.boxes[1:3])
    assert len(item["boxes"]) == len(rec.boxes) - 2 == len(item["masks"])
    assert (item["masks"].flatten(1).sum(1) > 0).all()


def test_unreadable_image_raises_naming_file(tmp_path):
    dset = _write_dataset(tmp_path, n=2)
    (tmp_path / "img1.png").write_bytes(b"not an image")
    ds = TrainDataset(dset, pipeline=Compose([]), pipeline_stage2=Compose([]))
    ds[0]
    with pytest.raises(FileNotFoundError, match="img1.png"):
        ds[1]


def test_empty_and_small_images_filtered(tmp_path):
    dset = _write_dataset(tmp_path, n=3)
    dset.records[0].boxes = np.zeros((0, 4), np.float32)
    dset.records[0].labels = np.zeros((0,), np.int64)
    dset.records[0].iscrowd = np.zeros((0,), bool)
    dset.records[1].width = 20
    ds = TrainDataset(dset)
    assert len(ds) == 1 and ds.records[0] is dset.records[2]


def test_loader_reproducible_across_runs_and_workers(tmp_path):
    dset = _write_dataset(tmp_path, n=12)

    def epoch_batches(num_workers, seed):
        ds = TrainDataset(dset, model_size="s", seed=seed)
        out = []
        for b in build_train_loader(ds, batch_size=3, num_workers=num_workers, epoch=0):
            out.append((b["imgs"].clone(), [x.clone() for x in b["boxes"]], b["image_ids"]))
        return out

    a, b = epoch_batches(2, 5), epoch_batches(2, 5)
    assert len(a) == 4
    for (ia, ba, ida), (ib, bb, idb) in zip(a, b):
        assert ida == idb
        assert torch.equal(ia, ib)
        assert all(torch.equal(x, y) for x, y in zip(ba, bb))
    c = epoch_batches(2, 6)
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(a, c))


class _ThreadsDataset(TrainDataset):
    """Reports, with each item, how many threads OpenCV uses in the process that built it."""

    def to_tensors(self, s):
        out = super().to_tensors(s)
        out["cv_threads"] = cv2.getNumThreads()
        return out


def test_loader_workers_run_opencv_on_one_thread(tmp_path):
    # W workers x C cores OpenCV threads oversubscribe the machine; the workers use their own
    # thread, and the pixels are the same either way (OpenCV splits rows between threads)
    dset = _write_dataset(tmp_path, n=8)

    def draw(opencv_threads):
        ds = _ThreadsDataset(dset, model_size="s", seed=3)
        return list(build_train_loader(ds, batch_size=2, num_workers=2, opencv_threads=opencv_threads))

    single, default = draw(0), draw(None)
    assert {t for b in single for t in b["cv_threads"]} == {1}
    assert {t for b in default for t in b["cv_threads"]} == {cv2.getNumThreads()}
    for a, b in zip(single, default, strict=True):
        assert torch.equal(a["imgs"], b["imgs"])
        assert all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))


def test_train_dataset_counts_what_the_reference_filter_leaves_out():
    def rec(i, size, n):
        return ImageRecord(f"{i}.jpg", size, size, i, boxes=np.tile(np.array([[1, 1, 9, 9]], np.float32), (n, 1)),
                           labels=np.zeros(n, np.int64), iscrowd=np.zeros(n, bool))
    recs = [rec(0, 64, 0), rec(1, 64, 0), rec(2, 20, 1), rec(3, 20, 0), rec(4, 64, 2), rec(5, 64, 1),
            rec(6, 32, 1)]
    ds = TrainDataset(DetectionDataset(recs, ["a"], [1]), img_scale=64)
    assert [r.image_id for r in ds.records] == [4, 5, 6]
    assert ds.left_out == {"without boxes": 3, "under 32 px": 1}
    keep_empty = TrainDataset(DetectionDataset(recs, ["a"], [1]), img_scale=64, filter_empty_gt=False)
    assert keep_empty.left_out == {"without boxes": 0, "under 32 px": 2}
    assert len(keep_empty) == 5
