"""Rotated-box data: polygon ops, DOTA / YOLO-OBB readers and writer, the DOTA split tool.

Expected values are independent of the code under test: hand-written label files with known
content, rectangle corners built here from (cx, cy, w, h, theta), shapely for areas/intersections.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from shapely.geometry import Polygon, box as shp_box

from rtmdet.data.dota import (
    DOTA_V1_CLASSES,
    DOTA_V15_CLASSES,
    load_dota,
    load_yolo_obb,
    read_dota_txt,
    save_dota_txt,
)
from rtmdet.data.split import sliding_windows, split_images
from rtmdet.ops.polygons import clip_polygon_to_rect, poly2obb_le90, polygon_area


def corners(cx, cy, w, h, t):
    """(8,) corners of a rotated rectangle: centre + R(t) @ (+-w/2, +-h/2)."""
    c, s = math.cos(t), math.sin(t)
    pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return np.array([v for dx, dy in pts for v in (cx + c * dx - s * dy, cy + s * dx + c * dy)])


def rect(x0, y0, x1, y1):
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], float)


def write_img(path, w, h, value=127):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


# ------------------------------------------------------------------------------------ polygons


def test_poly2obb_le90_known_boxes():
    q = np.stack([rect(0, 0, 4, 2), rect(0, 0, 2, 4), corners(10, 20, 30, 10, 0.5), corners(10, 20, 10, 30, 0.5)])
    got = poly2obb_le90(q)
    assert got.dtype == np.float32 and got.shape == (4, 5)
    np.testing.assert_allclose(got[0], [2, 1, 4, 2, 0], atol=1e-6)
    np.testing.assert_allclose(got[1], [1, 2, 4, 2, -math.pi / 2], atol=1e-6)  # pi/2 wraps to -pi/2
    np.testing.assert_allclose(got[2], [10, 20, 30, 10, 0.5], atol=1e-4)
    np.testing.assert_allclose(got[3], [10, 20, 30, 10, 0.5 + math.pi / 2 - math.pi], atol=1e-4)


def test_poly2obb_le90_random_rectangles():
    rng = np.random.default_rng(0)
    n = 500
    cx, cy = rng.uniform(0, 2000, n), rng.uniform(0, 2000, n)
    w, h = rng.uniform(2, 300, n), rng.uniform(2, 300, n)
    t = rng.uniform(-2 * math.pi, 2 * math.pi, n)
    keep = np.abs(w - h) > 0.5  # squares have no unique angle
    polys = np.stack([corners(*a) for a in zip(cx, cy, w, h, t)])
    # the same boxes with the corners listed from another vertex and in the other direction
    polys_alt = np.roll(polys.reshape(n, 4, 2)[:, ::-1], 1, axis=1).reshape(n, 8)
    for q in (polys, polys_alt):
        got = poly2obb_le90(q)[keep].astype(np.float64)
        assert np.all(got[:, 2] >= got[:, 3])
        assert np.all((got[:, 4] >= -math.pi / 2) & (got[:, 4] < math.pi / 2))
        ew, eh = np.maximum(w, h)[keep], np.minimum(w, h)[keep]
        et = np.where(w >= h, t, t + math.pi / 2)[keep]
        np.testing.assert_allclose(got[:, 0], cx[keep], atol=2e-3)
        np.testing.assert_allclose(got[:, 1], cy[keep], atol=2e-3)
        np.testing.assert_allclose(got[:, 2], ew, atol=2e-3)
        np.testing.assert_allclose(got[:, 3], eh, atol=2e-3)
        dt = (got[:, 4] - et + math.pi / 2) % math.pi - math.pi / 2  # same line modulo pi
        assert np.abs(dt).max() < 1e-4


def test_poly2obb_le90_matches_reference_rule_bitwise():
    """mmrotate: minAreaRect -> float32 tensor -> regularize_boxes('le90'), written out in torch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    q = np.concatenate([rng.uniform(0, 1000, (2000, 8)), np.stack([rect(0, 0, 4, 2), rect(0, 0, 2, 2)])])
    raw = []
    for p in q.astype(np.float32).reshape(-1, 4, 2):
        (x, y), (w, h), a = cv2.minAreaRect(p)
        raw.append([x, y, w, h, a / 180 * np.pi])
    x, y, w, h, t = torch.tensor(raw, dtype=torch.float32).unbind(-1)
    start = -np.pi / 2
    t = torch.where(w > h, t, t + np.pi / 2)
    t = ((t - start) % np.pi) + start
    ref = torch.stack([x, y, torch.where(w > h, w, h), torch.where(w > h, h, w), t], -1).numpy()
    np.testing.assert_array_equal(poly2obb_le90(q), ref)


def test_clip_polygon_to_rect_vs_shapely():
    rng = np.random.default_rng(2)
    for _ in range(300):
        kind = rng.integers(3)
        if kind == 0:
            poly = corners(*rng.uniform(20, 80, 2), *rng.uniform(5, 60, 2), rng.uniform(-3, 3)).reshape(4, 2)
        elif kind == 1:  # random convex polygon: hull of random points
            pts = rng.uniform(0, 100, (8, 2)).astype(np.float32)
            poly = cv2.convexHull(pts)[:, 0].astype(float)
        else:  # concave: a star
            ang = np.linspace(0, 2 * np.pi, 10, endpoint=False)
            r = np.where(np.arange(10) % 2, 10, 30) * rng.uniform(0.5, 1.5)
            poly = np.stack([50 + r * np.cos(ang), 50 + r * np.sin(ang)], 1)
        x0, y0 = rng.uniform(0, 70, 2)
        x1, y1 = x0 + rng.uniform(1, 60), y0 + rng.uniform(1, 60)
        got = clip_polygon_to_rect(poly, x0, y0, x1, y1)
        want = Polygon(poly).intersection(shp_box(x0, y0, x1, y1)).area
        assert polygon_area(got) == pytest.approx(want, rel=1e-9, abs=1e-9)
        assert polygon_area(poly) == pytest.approx(Polygon(poly).area, rel=1e-12)
    square = rect(10, 10, 20, 20).reshape(4, 2)
    np.testing.assert_array_equal(clip_polygon_to_rect(square, 0, 0, 30, 30), square)  # inside: unchanged
    np.testing.assert_array_equal(clip_polygon_to_rect(square, 10, 10, 20, 20), square)  # edges count as inside
    assert clip_polygon_to_rect(square, 30, 30, 40, 40).shape == (0, 2)
    np.testing.assert_allclose(polygon_area(np.stack([square, square * 2])), [100, 400])


# ---------------------------------------------------------------------------------------- DOTA

A_TXT = """imagesource:GoogleEarth
gsd:0.146343590398
10 10 50 10 50 30 10 30 plane 0
60 60 80 60 80 90 60 90 ship 1
1 2 3 4 5 6 7 plane 0
10 10 20 10 30 10 40 10 plane 0
10 10 50 10 50 30 10 30 airplane 0
nan 10 50 10 50 30 10 30 plane 0
90 90 110 90 110 110 90 110 harbor 0

5 5 15 5 15 15 5 15 small-vehicle
10 10 50 10 50 30 10 30 plane x
200 200 300 200 300 300 200 300 plane 0
"""


@pytest.fixture
def dota_dir(tmp_path):
    imgs, labels = tmp_path / "images", tmp_path / "labelTxt"
    labels.mkdir()
    write_img(imgs / "a.png", 100, 100)
    (labels / "a.txt").write_text(A_TXT)
    write_img(imgs / "b.png", 64, 48)  # no label file
    (labels / "c.txt").write_text("1 1 5 1 5 5 1 5 plane 0\n")  # no image
    write_img(imgs / "d.png", 64, 48)
    (labels / "d.txt").write_text("")  # an image without objects
    (imgs / "e.png").write_bytes(b"not an image")
    (labels / "e.txt").write_text("1 1 5 1 5 5 1 5 plane 0\n")
    return imgs, labels


def test_dota_classes():
    assert len(DOTA_V1_CLASSES) == 15 and len(DOTA_V15_CLASSES) == 16
    assert DOTA_V1_CLASSES[0] == "plane" and DOTA_V1_CLASSES[14] == "helicopter"
    assert DOTA_V15_CLASSES[15] == "container-crane"


def test_read_dota_txt(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(A_TXT)
    o = read_dota_txt(p)
    assert o.gsd == pytest.approx(0.146343590398)
    assert [ln for ln, _ in o.malformed] == [5, 12]
    assert o.names == ["plane", "ship", "plane", "airplane", "plane", "harbor", "small-vehicle", "plane"]
    assert o.difficult.tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert o.polygons.shape == (8, 8) and np.isnan(o.polygons[4, 0])


def test_load_dota_report_and_records(dota_dir):
    imgs, labels = dota_dir
    ds = load_dota(imgs, labels)
    rep = ds.report
    assert ds.class_names == list(DOTA_V1_CLASSES) and ds.cat_ids == list(range(15))
    assert [r.path for r in ds.records] == [str((imgs / "a.png").absolute()), str((imgs / "d.png").absolute())]
    assert (rep.num_images, rep.num_annotations) == (2, 4)
    assert (rep.missing_images, rep.unreadable_images, rep.unlabelled_images) == (1, 1, 1)
    assert (rep.malformed_annotations, rep.degenerate_boxes, rep.unknown_categories) == (2, 3, 1)
    assert rep.outside_polygons == 1 and rep.clipped_boxes == 0 and rep.duplicate_image_ids == 0
    assert not rep.ok and "1 images without a label file" in rep.summary()
    a, d = ds.records
    assert (a.width, a.height) == (100, 100)
    assert a.labels.tolist() == [0, 6, 12, 4]  # plane, ship, harbor, small-vehicle
    assert a.difficult.tolist() == [False, True, False, False] and a.difficult.dtype == bool
    assert a.polygons.dtype == np.float32
    np.testing.assert_array_equal(a.polygons[2], [90, 90, 110, 90, 110, 110, 90, 110])  # kept as given
    np.testing.assert_array_equal(a.boxes, [[10, 10, 50, 30], [60, 60, 80, 90], [90, 90, 100, 100], [5, 5, 15, 15]])
    assert d.polygons.shape == (0, 8) and d.boxes.shape == (0, 4) and d.difficult.shape == (0,)
    with pytest.raises(ValueError, match="strict"):
        load_dota(imgs, labels, strict=True)


def test_load_dota_without_labels_and_v15(dota_dir, tmp_path):
    imgs, labels = dota_dir
    ds = load_dota(imgs)  # test set: every readable image, no objects
    assert [r.path.rsplit("/", 1)[1] for r in ds.records] == ["a.png", "b.png", "d.png"]
    assert ds.report.unreadable_images == 1 and all(len(r.boxes) == 0 for r in ds.records)
    # v1.5: container-crane is a class; partly-outside polygons alone do not fail strict
    im2, lb2 = tmp_path / "i2", tmp_path / "l2"
    write_img(im2 / "p.png", 50, 40)
    lb2.mkdir()
    (lb2 / "p.txt").write_text("1 1 9 1 9 9 1 9 container-crane 0\n40 30 60 30 60 50 40 50 plane 1\n")
    ds = load_dota(im2, lb2, class_names=DOTA_V15_CLASSES, strict=True)
    assert ds.records[0].labels.tolist() == [15, 0] and ds.report.outside_polygons == 1 and ds.report.ok
    np.testing.assert_array_equal(ds.records[0].boxes[1], [40, 30, 50, 40])
    assert load_dota(im2, lb2).report.unknown_categories == 1


def test_save_dota_txt_round_trip(tmp_path):
    polys = np.array([[1.5, 2, 10, 2, 10, 8.25, 1.5, 8.25], [1000.125, 5, 1200, 5, 1200, 60, 1000.125, 60]])
    p = tmp_path / "o" / "x.txt"
    save_dota_txt(p, polys, ["plane", "ship"], np.array([1, 0]), difficult=np.array([0, 1]))
    assert p.read_text().splitlines()[0] == "1.5 2 10 2 10 8.25 1.5 8.25 ship 0"
    o = read_dota_txt(p)
    np.testing.assert_array_equal(o.polygons, polys)
    assert o.names == ["ship", "plane"] and o.difficult.tolist() == [0, 1] and not o.malformed
    save_dota_txt(p, polys, ["plane", "ship"], np.array([0, 0]), scores=np.array([0.9, 0.25]))
    assert [ln.split()[-2:] for ln in p.read_text().splitlines()] == [["plane", "0.9"], ["plane", "0.25"]]
    save_dota_txt(p, np.zeros((0, 8)), ["plane"], np.zeros(0, int))
    assert p.read_text() == ""


# ------------------------------------------------------------------------------------ YOLO-OBB


def test_load_yolo_obb_round_trip(tmp_path):
    root = tmp_path / "ds"
    (root / "data.yaml").parent.mkdir(parents=True)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: plane, 1: ship}\n")
    w, h = 200, 100
    write_img(root / "images/val/x.png", w, h)
    write_img(root / "images/val/y.png", w, h)  # no label file: background
    want = np.array([rect(20, 20, 60, 60), corners(120, 50, 80, 30, 0.4)])
    norm = want / np.array([w, h] * 4)
    lines = [f"{c} " + " ".join(f"{v:.9f}" for v in q) for c, q in zip((0, 1), norm)]
    lines += ["3 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2", "0 0.1 0.1 0.2", "0 0.1 0.1 0.2 0.1 0.3 0.1 0.4 0.1"]
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/val/x.txt").write_text("\n".join(lines) + "\n")
    ds = load_yolo_obb(root / "data.yaml", split="val")
    assert ds.class_names == ["plane", "ship"] and len(ds) == 2
    x, y = ds.records
    np.testing.assert_allclose(x.polygons, want, atol=1e-4)
    assert x.labels.tolist() == [0, 1] and x.difficult.tolist() == [False, False]
    np.testing.assert_allclose(x.boxes[0], [20, 20, 60, 60], atol=1e-4)
    assert len(y.boxes) == 0 and y.polygons.shape == (0, 8)
    rep = ds.report
    assert (rep.unknown_categories, rep.malformed_annotations, rep.degenerate_boxes) == (1, 1, 1)
    assert rep.num_annotations == 2
    # the same through the folder form (no yaml: images/<split>, labels/<split>, classes.txt)
    (root / "data.yaml").unlink()
    (root / "classes.txt").write_text("plane\nship\n")
    ds2 = load_yolo_obb(root, split="val")
    assert ds2.class_names == ["plane", "ship"]
    np.testing.assert_array_equal(ds2.records[0].polygons, x.polygons)


# --------------------------------------------------------------------------------------- split

BIG_W, BIG_H = 2500, 1800
BIG_OBJS = [  # (polygon, class, difficult)
    (rect(100, 100, 300, 200), "plane", 1),  # only in window (0,0)
    (corners(1200, 500, 200, 60, 0.3), "ship", 0),  # only in (824,0)
    (rect(950, 300, 1100, 400), "ship", 0),  # (0,0): iof 74/150 < 0.7 -> dropped; (824,0): whole
    (rect(904, 500, 1054, 560), "harbor", 0),  # (0,0): iof 120/150 = 0.8 -> kept, difficult 2
    (corners(2400, 1700, 80, 30, -0.7), "small-vehicle", 0),  # only in the corner window (1476,776)
    (rect(400, 800, 500, 950), "plane", 0),  # whole in (0,0) and in (0,776)
]


def test_sliding_windows_rules():
    w = sliding_windows(BIG_W, BIG_H, [1024], [200])
    # x: 0, 824, then 1648 + 1024 > 2500 -> moved to 2500 - 1024; y: 0, then 824 -> 1800 - 1024
    assert w[:, :2].tolist() == [[0, 0], [0, 776], [824, 0], [824, 776], [1476, 0], [1476, 776]]
    assert np.all(w[:, 2:] - w[:, :2] == 1024)
    w = sliding_windows(BIG_W, BIG_H, [2048], [400])  # rate 0.5: int(1024/0.5), int(200/0.5)
    assert w.tolist() == [[0, 0, 2048, 2048], [452, 0, 2500, 2048]]  # taller than the image: padded
    assert sliding_windows(300, 200, [1024], [200]).tolist() == [[0, 0, 1024, 1024]]  # all below thr: best kept
    assert len(sliding_windows(2048, 1024, [1024], [200])) == 3


def test_split_images(tmp_path):
    src_i, src_l, out = tmp_path / "img", tmp_path / "lab", tmp_path / "out"
    yy, xx = np.mgrid[0:BIG_H, 0:BIG_W]
    big = np.stack([(xx // 10) % 256, (yy // 10) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    src_i.mkdir()
    cv2.imwrite(str(src_i / "big.png"), big)
    polys = np.stack([o[0] for o in BIG_OBJS])
    save_dota_txt(src_l / "big.txt", polys, ["harbor", "plane", "ship", "small-vehicle"],
                  np.array([["harbor", "plane", "ship", "small-vehicle"].index(o[1]) for o in BIG_OBJS]),
                  difficult=np.array([o[2] for o in BIG_OBJS]))
    write_img(src_i / "small.png", 700, 1200, value=50)
    (src_l / "small.txt").write_text("gsd:0.5\n600 1100 700 1100 700 1190 600 1190 ship 0\nbad line\n")
    (src_i / "broken.png").write_bytes(b"\x89PNG garbage")
    (src_l / "broken.txt").write_text("")
    (src_l / "orphan.txt").write_text("")
    write_img(src_i / "nolabel.png", 300, 200)

    s = split_images(src_i, src_l, out, progress=False)

    assert s.unreadable == [str(src_i / "broken.png")] and "broken.png" in str(s)
    assert s.unlabelled == [str(src_i / "nolabel.png")]
    assert s.labels.missing_images == 1 and s.labels.malformed_annotations == 1
    assert (s.images, s.patches, s.objects) == (3, 6 + 2 + 1, len(BIG_OBJS) + 1)
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(
        [f"big__1024__{x}___{y}.png" for x in (0, 824, 1476) for y in (0, 776)]
        + ["small__1024__0___0.png", "small__1024__0___176.png", "nolabel__1024__0___0.png"])
    assert sorted(p.name for p in (out / "annfiles").iterdir()) == sorted(n[:-4] + ".txt" for n in names)

    # every window: pixels are the image crop; objects are those with iof >= 0.7 (shapely), shifted
    n_written = 0
    for x in (0, 824, 1476):
        for y in (0, 776):
            name = f"big__1024__{x}___{y}"
            np.testing.assert_array_equal(cv2.imread(str(out / "images" / f"{name}.png")), big[y:y + 1024, x:x + 1024])
            got = read_dota_txt(out / "annfiles" / f"{name}.txt")
            want = []
            for poly, cls, diff in BIG_OBJS:
                sp = Polygon(poly.reshape(4, 2))
                iof = sp.intersection(shp_box(x, y, x + 1024, y + 1024)).area / sp.area
                if iof >= 0.7:
                    want.append((poly - [x, y] * 4, cls, diff if iof >= 1 - 1e-12 else 2))
            assert got.names == [c for _, c, _ in want], name
            assert got.difficult.tolist() == [d for _, _, d in want], name
            np.testing.assert_allclose(got.polygons, np.array([p for p, _, _ in want]).reshape(-1, 8), atol=1e-3)
            n_written += len(want)
    assert s.patch_objects == n_written + 1
    # the specific cases, spelled out
    win00 = read_dota_txt(out / "annfiles/big__1024__0___0.txt")
    assert win00.names == ["plane", "harbor", "plane"] and win00.difficult.tolist() == [1, 2, 0]
    np.testing.assert_array_equal(win00.polygons[1], rect(904, 500, 1054, 560))  # not clipped
    win824 = read_dota_txt(out / "annfiles/big__1024__824___0.txt")
    assert win824.names == ["ship", "ship", "harbor"] and win824.difficult.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(win824.polygons[1], rect(950 - 824, 300, 1100 - 824, 400))
    corner = read_dota_txt(out / "annfiles/big__1024__1476___776.txt")
    np.testing.assert_allclose(corner.polygons[0], corners(2400 - 1476, 1700 - 776, 80, 30, -0.7), atol=1e-3)
    assert read_dota_txt(out / "annfiles/big__1024__1476___0.txt").names == []

    # small image: padded to 1024x1024 with the pad value (bottom/right), object in the lower window
    top = cv2.imread(str(out / "images/small__1024__0___0.png"))
    assert top.shape == (1024, 1024, 3)
    assert np.all(top[:, :700] == 50) and np.all(top[:, 700:] == 114)
    low = read_dota_txt(out / "annfiles/small__1024__0___176.txt")
    np.testing.assert_array_equal(low.polygons, [rect(600, 924, 700, 1014)])
    assert read_dota_txt(out / "annfiles/small__1024__0___0.txt").names == []
    nolab = cv2.imread(str(out / "images/nolabel__1024__0___0.png"))
    assert np.all(nolab[:200, :300] == 127) and np.all(nolab[200:] == 114)

    # the output reads back as a DOTA dataset
    ds = load_dota(out / "images", out / "annfiles")
    assert len(ds) == 9 and ds.report.num_annotations == s.patch_objects and ds.report.ok
    with pytest.raises(FileExistsError):
        split_images(src_i, src_l, out, progress=False)


def test_split_pad_value_per_channel_and_rate(tmp_path):
    write_img(tmp_path / "i/s.png", 600, 500, value=9)
    s = split_images(tmp_path / "i", None, tmp_path / "o", patch=512, overlap=100, rates=(0.5,),
                     pad_value=(104, 116, 124), progress=False)
    assert s.patches == 1  # window 1024 (int(512/0.5)) over 600x500: one, padded, not resized
    p = cv2.imread(str(tmp_path / "o/images/s__1024__0___0.png"))
    assert p.shape == (1024, 1024, 3) and p[0, 0].tolist() == [9, 9, 9] and p[-1, -1].tolist() == [104, 116, 124]
    assert (tmp_path / "o/annfiles/s__1024__0___0.txt").read_text() == ""
