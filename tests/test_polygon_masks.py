"""Polygon masks as the reference RTMDet-Ins pipeline moves them (rtmdet.data.polygon_masks) and
draws them (rtmdet.ops.polygon_raster), against pycocotools and helpers.RefPolygons (mmdet's
PolygonMasks operations written the plain way)."""
from __future__ import annotations


import numpy as np
import pytest
from helpers import RefPolygons, assert_same_polygons, same_pipeline_samples
from pycocotools import mask as mask_utils

from rtmdet.data.polygon_masks import PolygonTarget, record_polygons
from rtmdet.data.records import ImageRecord
from rtmdet.data.target_loaders import MaskLoader, resolve_loader
from rtmdet.data.targets import MaskTarget
from rtmdet.data.transforms import CachedMosaic, RandomCrop, Sample, build_train_pipeline
from rtmdet.ops.polygon_raster import rasterize_instances, rasterize_polygons

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2


def _coco_draw(polys, h, w):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([np.array(p, np.float64) for p in polys], h, w)))


def _random_polygon(rng, kind, h, w):
    k = int(rng.integers(3, 12))
    span = max(h, w)
    if kind == 0:  # anywhere, partly outside
        return rng.uniform(-10, span + 10, 2 * k)
    if kind == 1:  # tenths: 5 x lands within a rounding error of .5 (the C code's ties)
        return np.round(rng.uniform(-5, span + 5, 2 * k) * 10) / 10
    if kind == 2:  # integers, outside too
        return rng.integers(-3, span + 3, 2 * k).astype(np.float64)
    p = rng.uniform(0, span, 2 * k)  # a repeated vertex (0 / 0 in the C code)
    p[2:4] = p[0:2]
    return p


def test_rasterizer_equals_pycocotools():
    rng = np.random.default_rng(0)
    cases = 0
    for it in range(1500):
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        polys = [_random_polygon(rng, it % 4, h, w) for _ in range(int(rng.integers(1, 4)))]
        ref = _coco_draw(polys, h, w)
        for step in (1, 2, 3, 4):
            np.testing.assert_array_equal(rasterize_polygons(polys, h, w, step),
                                          ref[step // 2::step, step // 2::step])
            cases += 1
    # a big canvas, long edges, the loss grid; several instances of several polygons at once
    for it in range(20):
        polys = [_random_polygon(rng, (it + j) % 4, 640, 640) for j in range(7)]
        owners = np.array([2, 0, 2, 3, 0, 0, 2])
        for step in (1, 4):
            got = rasterize_instances(polys, owners, 5, 640, 600, step)
            for i in range(5):
                mine = [p for p, o in zip(polys, owners) if o == i]
                ref = _coco_draw(mine, 640, 600) if mine else np.zeros((640, 600), np.uint8)
                np.testing.assert_array_equal(got[i], ref[step // 2::step, step // 2::step])
    assert cases == 6000


def test_rasterizer_small_and_large_masks():
    # small masks on a large grid are painted run by run, large ones XOR-accumulated over the
    # grid (the cheaper of the two, by their sizes): both equal pycocotools, as a union
    rng = np.random.default_rng(7)
    small = [np.array([x, y, x + 6.3, y + 1.2, x + 2.7, y + 7.9]) for x, y in rng.uniform(0, 600, (6, 2))]
    large = [np.array([-3.0, 2.5, 650, 1.2, 640, 630.7, 5.1, 600]), np.array([100.0, 100, 500, 120, 300, 500])]
    for polys, owners in ((small, [0, 1, 1, 2, 2, 2]), (large, [0, 0]), (small + large, [0, 1, 1, 2, 2, 2, 1, 2])):
        owners = np.array(owners)
        for step in (1, 4):
            got = rasterize_instances(polys, owners, owners.max() + 1, 640, 620, step)
            for i in range(owners.max() + 1):
                ref = _coco_draw([p for p, o in zip(polys, owners) if o == i], 640, 620)
                np.testing.assert_array_equal(got[i], ref[step // 2::step, step // 2::step])


def test_rasterizer_empty_and_degenerate():
    assert rasterize_polygons([np.zeros(6)], 5, 7).sum() == 0  # mmdet's dummy polygon
    assert rasterize_polygons([], 5, 7).shape == (5, 7)
    line = np.array([1.0, 1, 6, 1, 3, 1])  # no area
    np.testing.assert_array_equal(rasterize_polygons([line], 5, 7), _coco_draw([line], 5, 7))


def _crop_inputs(rng):
    """Polygons that exercise every branch of the crop: inside, outside, across one or two
    edges, a U cut into two parts, a bow-tie (buffer(0) splits it), one touching the crop
    only along an edge (a line: dropped), a repeated vertex."""
    yield [np.array([10, 10, 30, 10, 30, 30, 10, 30.0])]
    yield [np.array([-50, -50, -10, -50, -10, -10.0])]
    yield [np.array([-5, 5, 20, 5, 20, 25, -5, 25.0])]
    yield [np.array([50, 50, 90, 50, 90, 90.0])]
    yield [np.array([5, 5, 15, 5, 15, 70, 25, 70, 25, 5, 35, 5, 35, 80, 5, 80.0])]
    yield [np.array([0, 0, 40, 40, 40, 0, 0, 40.0])]
    yield [np.array([60, 10, 70, 10, 70, 20, 60, 20.0])]
    yield [np.array([1, 1, 1, 1, 9, 2, 4, 9.0]), np.array([20, 20, 26, 21, 22, 29.0])]
    for _ in range(60):
        yield [_random_polygon(rng, int(rng.integers(0, 4)), 80, 80) for _ in range(int(rng.integers(1, 3)))]


def test_crop_equals_the_reference_polygon_by_polygon():
    rng = np.random.default_rng(3)
    polys = list(_crop_inputs(rng))
    ours, ref = PolygonTarget(polys, 80, 80), RefPolygons(polys, 80, 80)
    for x0, y0, cw, ch in [(0, 0, 60, 60), (7, 3, 40, 50), (20, 30, 60, 50), (0, 0, 80, 80), (79, 79, 5, 5)]:
        a, b = ours.crop(x0, y0, cw, ch), ref.crop(x0, y0, cw, ch)
        assert (a.width, a.height) == (b.width, b.height)
        assert len(a) == len(b) == len(polys)
        assert_same_polygons(a, b)
        np.testing.assert_array_equal(a.boxes(), b.boxes())
        np.testing.assert_array_equal(a.as_array(), b.as_array())
    # the line-only contact leaves the dummy; the U gives two parts
    cut = ours.crop(0, 0, 60, 60)
    np.testing.assert_array_equal(cut.polys[6], [np.zeros(6)])
    assert len(ours.crop(0, 0, 80, 40).polys[4]) == 2


def test_resize_uses_the_rounded_sizes_and_translate_clamps():
    t = PolygonTarget([[np.array([10.0, 20, 30, 20, 30, 40])]], 101, 77)
    # Resize: (sx, sy) = new / old, and int(old * s + 0.5) = new: the factors are s itself
    r = t.resize(64 / 101, 49 / 77, 64, 49).polys[0][0]
    np.testing.assert_array_equal(r, [10 * (64 / 101), 20 * (49 / 77), 30 * (64 / 101), 20 * (49 / 77),
                                      30 * (64 / 101), 40 * (49 / 77)])
    # a float rescale (Mosaic, MixUp): mmcv rounds the new size, int(101 * 0.5 + 0.5) = 51
    r = t.resize(0.5, 0.5, 50, 38).polys[0][0]
    np.testing.assert_array_equal(r[0::2], np.array([10.0, 30, 30]) * (51 / 101))
    np.testing.assert_array_equal(r[1::2], np.array([20.0, 20, 40]) * (39 / 77))
    m = t.translate(80, -25, 100, 100).polys[0][0]
    np.testing.assert_array_equal(m, [90, 0, 100, 0, 100, 15])
    f = t.flip(101, 77, "diagonal").polys[0][0]
    np.testing.assert_array_equal(f, [91, 57, 71, 57, 71, 37])
    assert t.select(np.array([False])).polys == [] and len(t.blank(2, 5, 5)) == 2


def test_rotate_turns_vertices_with_the_image_and_clamps():
    # the image turns about ((w - 1) / 2, (h - 1) / 2): by 180 degrees pixel x lands on w - 1 - x
    t = PolygonTarget([[np.array([2.0, 3, 8, 3, 8, 7])], [np.array([-4.0, 1, 3, 1, 3, 5])]], 10, 9)
    r = t.rotate(180, 10, 9).polys
    np.testing.assert_allclose(r[0][0], [7, 5, 1, 5, 1, 1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(r[1][0], [10, 7, 6, 7, 6, 3], rtol=0, atol=1e-9)  # x = 13 clamped to 10
    # a quarter turn clockwise on screen: (x, y) about (cx, cy) -> (cx - (y - cy), cy + (x - cx))
    q = PolygonTarget([[np.array([4.5, 2.0, 6.0, 4.0, 4.5, 4.0])]], 10, 10).rotate(90, 10, 10).polys[0][0]
    np.testing.assert_allclose(q, [7.0, 4.5, 5.0, 6.0, 5.0, 4.5], rtol=0, atol=1e-9)


def test_mosaic_places_polygons_as_the_reference():
    # one Mosaic draw with PolygonTarget and with the oracle: the same tiles, scales and clamps
    rng = np.random.default_rng(5)
    samples = []
    for i in range(6):
        h, w = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        polys = [[np.array([0.25 * w, 0.25 * h, 0.9 * w, 0.3 * h, 0.5 * w, 0.95 * h]) + i]]
        boxes = PolygonTarget(polys, w, h).boxes()
        samples.append((np.zeros((h, w, 3), np.uint8), boxes, polys, w, h))
    outs = []
    for kind in (PolygonTarget, RefPolygons):
        mosaic = CachedMosaic((64, 64), max_cached_images=10)
        r = np.random.default_rng(9)
        for img, boxes, polys, w, h in samples:
            out = mosaic(Sample(img.copy(), boxes.copy(), [0] * len(boxes), targets={"masks": kind(polys, w, h)}), r)
        outs.append(out)
    a, b = outs
    assert len(a.boxes) >= 2
    for pa, pb in zip(a.targets["masks"].polys, b.targets["masks"].polys, strict=True):
        np.testing.assert_array_equal(np.concatenate(pa), np.concatenate(pb))


def _polygon_sample(rng, kind, h, w, n):
    polys = []
    for _ in range(n):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        parts = []
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(3, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            if rng.random() < 0.2:
                rng.shuffle(ang)  # self-intersecting
            rad = rng.uniform(4, 0.3 * min(h, w), k)
            parts.append(np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).reshape(-1))
        polys.append(parts)
    boxes = PolygonTarget(polys, w, h).boxes()
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Sample(img, np.clip(boxes, 0, [w, h, w, h]), rng.integers(0, 80, n), targets={"masks": kind(polys, w, h)})


@pytest.mark.parametrize("size,stage", [("ins-s", 1), ("ins-tiny", 2), ("ins-tiny", 1)])
def test_ins_pipelines_move_polygons_as_the_reference(size, stage):
    # the RTMDet-Ins training pipelines (mosaic, fused resize + crop with recomputed boxes, flip,
    # pad, mixup, filter) with PolygonTarget and with the plain oracle: identical polygons, boxes
    # and drawn masks (full and on the loss grid)
    def make(rng, kind):
        return _polygon_sample(rng, kind, int(rng.integers(80, 300)), int(rng.integers(80, 300)),
                               int(rng.integers(1, 7)))

    def check(a, b):
        ta, tb = a.targets["masks"], b.targets["masks"]
        assert_same_polygons(ta, tb)
        np.testing.assert_array_equal(ta.as_array(), tb.as_array())
        np.testing.assert_array_equal(ta.as_array(4), tb.as_array(4))
    assert same_pipeline_samples(build_train_pipeline(size, stage, 160), make, (PolygonTarget, RefPolygons),
                                 24, 21, check) >= 30


def test_recomputed_boxes_are_the_polygons_extents():
    s = Sample(np.zeros((100, 100, 3), np.uint8), [[0, 0, 100, 100]], [0],
               targets={"masks": PolygonTarget([[np.array([10.25, 20.5, 120.0, 30.75, 50.125, 90.0])]], 100, 100)})
    out = RandomCrop((60, 100), recompute_bbox=True).apply(s, 0, 5, 100, 60)
    # cut at x = 65 (the crop's right edge); the vertices inside keep their fractions
    np.testing.assert_allclose(out.boxes, [[5.25, 20.5, 60.0, 90.0]], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- loading
def _rec(segs, iscrowd=None):
    n = len(segs)
    return ImageRecord(path="x.jpg", width=50, height=40, image_id=1,
                       boxes=np.tile(np.array([[1, 1, 20, 20]], np.float32), (n, 1)),
                       labels=np.zeros(n, np.int64),
                       iscrowd=np.zeros(n, bool) if iscrowd is None else np.array(iscrowd, bool),
                       segmentations=segs)


def test_record_polygons_as_load_annotations():
    rle = mask_utils.encode(np.asfortranarray(np.ones((40, 50), np.uint8)))
    rle["counts"] = rle["counts"].decode()
    rec = _rec([[[1, 2, 10, 2, 10, 12]], [[1, 2, 3, 4], [1, 2, 3, 4, 5]], [], rle,
                [[1, 2, 10, 2, 10, 12], [5, 5, 6, 6]]])
    polys, missing = record_polygons(rec)
    np.testing.assert_array_equal(missing, [False, True, True, True, False])
    assert polys[0][0].dtype == np.float64  # integer JSON coordinates become floats
    np.testing.assert_array_equal(polys[1], [np.zeros(6)])
    assert len(polys[4]) == 1  # the 4-coordinate polygon is dropped


def test_mask_loader_picks_polygons_or_bitmaps_per_dataset():
    rle = mask_utils.encode(np.asfortranarray(np.ones((40, 50), np.uint8)))
    rle["counts"] = rle["counts"].decode()
    poly = [[1, 2, 10, 2, 10, 12]]
    polygons = [_rec([poly, poly]), _rec([poly, rle], iscrowd=[False, True])]  # a crowd RLE is fine
    loader = resolve_loader(MaskLoader(), polygons)
    assert loader.kind == "polygons" and isinstance(loader(polygons[1], 40, 50), PolygonTarget)
    np.testing.assert_array_equal(loader.ignored(polygons[1]), [False, True])
    mixed = polygons + [_rec([rle, []])]
    loader = resolve_loader(MaskLoader(), mixed)
    assert loader.kind == "bitmaps" and isinstance(loader(mixed[2], 40, 50), MaskTarget)
    np.testing.assert_array_equal(loader.ignored(mixed[2]), [False, True])  # the empty one
    with pytest.raises(ValueError, match="needs masks"):
        resolve_loader(MaskLoader(), [_rec([[], []])])
    with pytest.raises(ValueError, match="kind"):
        MaskLoader("dense")
