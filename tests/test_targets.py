"""The per-instance target protocol (rtmdet.data.targets): MaskTarget's geometry, and that the
transforms serve any target kind through the protocol alone."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import DenseMasks

from rtmdet.data.targets import FLIP_DIRECTIONS, MaskTarget, place_targets
from rtmdet.data.transforms import RandomCrop, Sample, build_train_pipeline


def test_mask_translate_is_crop_pad_and_placement():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 2, (3, 7, 9), dtype=np.uint8)
    t = MaskTarget(m)
    np.testing.assert_array_equal(t.translate(-2, -1, 5, 4).as_array(), m[:, 1:5, 2:7])  # crop
    padded = t.translate(0, 0, 12, 10).as_array()
    assert padded.shape == (3, 10, 12) and not padded[:, 7:].any() and not padded[:, :, 9:].any()
    np.testing.assert_array_equal(padded[:, :7, :9], m)
    placed = t.translate(4, -3, 8, 6).as_array()  # partly outside on two sides
    ref = np.zeros((3, 6, 8), np.uint8)
    ref[:, 0:4, 4:8] = m[:, 3:7, 0:4]
    np.testing.assert_array_equal(placed, ref)
    np.testing.assert_array_equal(t.flip(9, 7).flip(9, 7).as_array(), m)
    both = MaskTarget.concat([t, t.blank(2, 9, 7)])
    assert len(both) == 5 and not both.as_array()[3:].any()
    np.testing.assert_array_equal(both.select(np.array([True, False, True, False, False])).as_array(), m[[0, 2]])
    with pytest.raises(ValueError, match="different image sizes"):
        MaskTarget.concat([t, t.blank(1, 9, 8)])


def _random_masks(rng, n, h, w):
    """Masks as instances look: blobs of any size (a pixel, the whole image), empty ones, holes,
    instances touching the borders."""
    out = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        kind = rng.integers(0, 5)
        if kind == 0:
            continue  # empty
        if kind == 1:
            out[k] = rng.random((h, w)) < 0.3  # scattered over the whole image
            continue
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1, x1 = int(rng.integers(y0 + 1, h + 1)), int(rng.integers(x0 + 1, w + 1))
        out[k, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < (0.9 if kind == 2 else 0.5)
    return out


def test_masks_equal_the_dense_oracle_under_every_operation():
    # random chains of the protocol's operations on MaskTarget (crops + corners) and on full
    # bitmaps moved the plain way (DenseMasks): the same bitmaps and boxes after every step
    rng = np.random.default_rng(3)
    steps = 0
    for trial in range(120):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        dense = _random_masks(rng, int(rng.integers(0, 6)), h, w)
        a, b = MaskTarget(dense), DenseMasks(dense)
        for _ in range(6):
            op = rng.integers(0, 7)
            if op == 0:
                nw, nh = int(rng.integers(1, 3 * w + 2)), int(rng.integers(1, 3 * h + 2))
                a, b = a.resize(nw / w, nh / h, nw, nh), b.resize(nw / w, nh / h, nw, nh)
                w, h = nw, nh
            elif op == 1:  # resize, then a window of it (the fused resize + crop), maybe a subset
                nw, nh = int(rng.integers(1, 3 * w + 2)), int(rng.integers(1, 3 * h + 2))
                x0, y0 = int(rng.integers(0, nw)), int(rng.integers(0, nh))
                cw, ch = int(rng.integers(1, nw - x0 + 1)), int(rng.integers(1, nh - y0 + 1))
                idx = None if rng.random() < 0.5 else np.flatnonzero(rng.random(len(a)) < 0.6)
                a = a if idx is None else a.select(idx)
                a = a.resize_window(nw / w, nh / h, nw, nh, (x0, y0, cw, ch))
                b = b.select(np.arange(len(b)) if idx is None else idx)
                b = b.resize(nw / w, nh / h, nw, nh).translate(-x0, -y0, cw, ch)
                w, h = cw, ch
            elif op == 2:
                d = FLIP_DIRECTIONS[rng.integers(0, 3)]
                a, b = a.flip(w, h, d), b.flip(w, h, d)
            elif op == 3:  # crop, pad or placement, partly or wholly off the new image
                nw, nh = int(rng.integers(1, 2 * w + 2)), int(rng.integers(1, 2 * h + 2))
                dx, dy = int(rng.integers(-w - 2, nw + 2)), int(rng.integers(-h - 2, nh + 2))
                a, b = a.translate(dx, dy, nw, nh), b.translate(dx, dy, nw, nh)
                w, h = nw, nh
            elif op == 4:
                keep = rng.random(len(a)) < 0.7 if rng.random() < 0.5 else rng.permutation(len(a))[:2]
                a, b = a.select(keep), b.select(keep)
            elif op == 5:
                extra = _random_masks(rng, int(rng.integers(0, 3)), h, w)
                blank = int(rng.integers(0, 2))
                a = MaskTarget.concat([a, MaskTarget(extra), a.blank(blank, w, h)])
                b = DenseMasks.concat([b, DenseMasks(extra), b.blank(blank, w, h)])
            else:
                angle = float(rng.uniform(-180, 180))
                a, b = a.rotate(angle, w, h), b.rotate(angle, w, h)
            got = a.as_array()
            assert got.shape == b.data.shape and got.dtype == np.uint8 and len(a) == len(b)
            np.testing.assert_array_equal(got, b.data, err_msg=f"trial {trial}, op {op}")
            np.testing.assert_array_equal(a.boxes(), b.boxes())
            for step in (2, 3, 4, 8):  # the loss grid: the centres of step-pixel cells
                np.testing.assert_array_equal(a.as_array(step), b.data[:, step // 2::step, step // 2::step])
            steps += 1
    assert steps == 720


def test_mask_flip_reverses_columns_rows_or_both():
    rng = np.random.default_rng(2)
    cases = [rng.integers(0, 2, (n, h, w), dtype=np.uint8) for n, h, w in ((3, 7, 9), (1, 1, 5), (4, 6, 1))]
    cases += [np.zeros((0, 7, 9), np.uint8), rng.integers(0, 2, (3, 8, 10), dtype=np.uint8)[:, 1:, ::2]]  # a view
    for m in cases:
        n, h, w = m.shape
        for direction, view in (("horizontal", m[:, :, ::-1]), ("vertical", m[:, ::-1]),
                                ("diagonal", m[:, ::-1, ::-1])):
            got = MaskTarget(m).flip(w, h, direction).as_array()
            assert got.shape == m.shape and got.dtype == np.uint8
            np.testing.assert_array_equal(got, view)


def test_masks_placed_equals_the_dense_placement():
    rng = np.random.default_rng(1)
    for _ in range(40):
        width, height = int(rng.integers(4, 30)), int(rng.integers(4, 30))
        parts, dense = [], []
        for _ in range(int(rng.integers(1, 5))):
            n, h, w = int(rng.integers(0, 4)), int(rng.integers(1, 25)), int(rng.integers(1, 25))
            # offsets inside, across an edge or entirely off the image
            dx, dy = int(rng.integers(-w - 3, width + 3)), int(rng.integers(-h - 3, height + 3))
            m = rng.integers(0, 2, (n, h, w), dtype=np.uint8)
            parts.append((MaskTarget(m), dx, dy))
            dense.append((DenseMasks(m), dx, dy))
        want = DenseMasks.concat([t.translate(dx, dy, width, height) for t, dx, dy in dense])
        got = place_targets(MaskTarget, parts, width, height)
        np.testing.assert_array_equal(got.as_array(), want.data)
    # any kind: concat of the translated parts
    ids = place_targets(_Ids, [(_Ids([1, 2]), 3, 4), (_Ids([5]), -1, 0)], 10, 10)
    assert ids.ids.tolist() == [1, 2, 5]


def test_select_keeping_everything_is_the_same_target():
    t = MaskTarget(np.ones((3, 4, 5), np.uint8))
    assert t.select(np.ones(3, bool)) is t
    np.testing.assert_array_equal(t.select(np.array([2, 0])).as_array(), t.as_array()[[2, 0]])
    assert len(t.select(np.zeros(3, bool))) == 0


class _Ids:
    """A target kind the transforms have never heard of: an id per instance, no geometry."""

    def __init__(self, ids):
        self.ids = np.asarray(ids, np.int64)

    def __len__(self):
        return len(self.ids)

    def select(self, keep):
        return _Ids(self.ids[keep])

    def resize(self, sx, sy, width, height):
        return self

    def flip(self, width, height, direction="horizontal"):
        return self

    def rotate(self, angle, width, height):
        return self

    def translate(self, dx, dy, width, height):
        return self

    def crop(self, x0, y0, width, height):
        return self

    def blank(self, n, width, height):
        return _Ids(np.full(n, -1))

    @classmethod
    def concat(cls, parts):
        return cls(np.concatenate([p.ids for p in parts]))

    def boxes(self):
        return None

    def as_array(self):
        return self.ids


def test_any_target_kind_stays_aligned_through_the_pipelines():
    rng = np.random.default_rng(1)
    seen = 0
    for stage in (1, 2):
        pipe = build_train_pipeline("ins-s", stage, img_scale=128)
        for i in range(16):
            h, w, n = int(rng.integers(60, 200)), int(rng.integers(60, 200)), int(rng.integers(1, 5))
            xy = rng.uniform(0, [w - 20, h - 20], (n, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(8, 20, (n, 2))], 1)
            ids = np.arange(n) + 100 * i
            masks = np.zeros((n, h, w), np.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
                masks[k, y1:y2, x1:x2] = 1
            s = Sample(np.zeros((h, w, 3), np.uint8), boxes, ids,
                       targets={"ids": _Ids(ids), "masks": MaskTarget(masks)})
            out = pipe(s, rng)
            if out is None:
                continue
            assert len(out.targets["ids"]) == len(out.boxes) == len(out.targets["masks"])
            np.testing.assert_array_equal(out.targets["ids"].ids, out.labels)  # followed every selection
            seen += len(out.boxes)
    assert seen > 20


def test_recompute_bbox_keeps_boxes_without_a_target_that_can_tell():
    s = Sample(np.zeros((50, 50, 3), np.uint8), [[3, 4, 30, 40]], [0], targets={"ids": _Ids([7])})
    out = RandomCrop((50, 50), recompute_bbox=True)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.boxes, [[3, 4, 30, 40]])
