"""Tiled inference (`rtmdet.inference.tiling`, `predict(..., tile=, overlap=)`) for every family:
window placement, patches equal to predicting each crop directly, the merge (shift back, NMS
across tiles, masks pasted), graph backends, and the argument checks."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.data.split import sliding_windows
from rtmdet.detections import Detections
from rtmdet.families import get_family
from rtmdet.inference import TorchBackend, resolve_test_cfg
from rtmdet.inference.tiling import crop_patch, predict_patches, tile_windows

from helpers import DET_FIX, FIXTURES, INS_FIX, load_fixture, match_detections, need

ROT_FIX = FIXTURES / "rotated_rtmdet_tiny-3x-dota"


@pytest.fixture(scope="module")
def det_model():
    return rtmdet.load(need(DET_FIX / "weights.pth"))


@pytest.fixture(scope="module")
def big_image():
    """1500x1100 textured scene (a fixture image stretched): 2x2 windows of 1024 at overlap 200."""
    img = load_fixture(DET_FIX / "predict_large.pth")["image_bgr"].numpy()
    return cv2.resize(img, (1500, 1100), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------- windows

def test_windows_are_split_windows_and_cover_the_image():
    wins = tile_windows(1500, 1100, 1024, 200)
    assert np.array_equal(wins, sliding_windows(1500, 1100, [1024], [200]))
    assert wins.tolist() == [[0, 0, 1024, 1024], [0, 76, 1024, 1100],
                             [476, 0, 1500, 1024], [476, 76, 1500, 1100]]
    covered = np.zeros((1100, 1500), bool)
    for x0, y0, x1, y1 in wins:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    # an image smaller than a tile on one side: windows reach past it, patches are padded
    small = tile_windows(3000, 500, 1024, 200)
    assert (small[:, 3] == 1024).all() and small[-1, 2] == 3000
    img = np.full((500, 3000, 3), 7, np.uint8)
    p = crop_patch(img, small[0])
    assert p.shape == (1024, 1024, 3) and (p[:500] == 7).all() and (p[500:] == 114).all()


@pytest.mark.parametrize("kw, msg", [(dict(tile=16), "tile=16"), (dict(tile=640, overlap=640), "overlap"),
                                     (dict(tile=640, overlap=-1), "overlap"), (dict(tile=64.5), "tile")])
def test_bad_tiling_arguments_are_value_errors(det_model, kw, msg):
    with pytest.raises(ValueError, match=msg):
        det_model.predict(np.zeros((100, 100, 3), np.uint8), **kw)


# ---------------------------------------------------------------------------- detect

def test_patches_equal_predict_on_each_crop_and_merge_keeps_their_shifted_boxes(det_model, big_image):
    backend = TorchBackend(det_model)
    cfg = resolve_test_cfg(det_model.test_cfg, imgsz=320)  # each 1024 patch letterboxed to 320
    [(dets, offsets)] = predict_patches(backend, [big_image], cfg, 1024, 200, batch_size=3)
    wins = tile_windows(1500, 1100, 1024, 200)
    assert offsets.tolist() == wins[:, :2].tolist() and len(dets) == 4
    shifted = []
    for d, (x0, y0, x1, y1) in zip(dets, wins):
        direct = det_model.predict(np.ascontiguousarray(big_image[y0:y1, x0:x1]), imgsz=320)
        assert len(d) == len(direct) > 0
        torch.testing.assert_close(d.boxes, direct.boxes, rtol=1e-5, atol=1e-3)  # batch of 3 vs 1
        assert torch.equal(d.labels, direct.labels) and torch.allclose(d.scores, direct.scores)
        shifted.append((d.boxes + torch.tensor([x0, y0, x0, y0]), d.scores, d.labels))
    tiled = det_model.predict(big_image, tile=1024, overlap=200, imgsz=320, batch_size=3)
    assert tiled.image_shape == (1100, 1500) and 0 < len(tiled) <= det_model.test_cfg.max_per_img
    assert bool((tiled.scores[1:] <= tiled.scores[:-1]).all())
    # every merged detection is a patch detection shifted back (clipped to the image)
    allb = torch.cat([s[0] for s in shifted])
    allb = torch.stack([allb[:, 0].clamp(0, 1500), allb[:, 1].clamp(0, 1100),
                        allb[:, 2].clamp(0, 1500), allb[:, 3].clamp(0, 1100)], 1)
    alls, alll = torch.cat([s[1] for s in shifted]), torch.cat([s[2] for s in shifted])
    assert match_detections(allb, alls, alll, tiled.boxes, tiled.scores, tiled.labels,
                            score_tol=1e-6, box_tol=1e-3) == 0
    assert len(tiled) < len(allb)  # the overlaps saw objects twice: NMS merged them
    # the same through the family directly
    merged = det_model.family.merge(dets, offsets, (1100, 1500), cfg)
    assert torch.equal(merged.boxes, tiled.boxes) and torch.equal(merged.scores, tiled.scores)


def _dets(boxes, scores, labels, names=("a", "b"), **kw):
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores),
                      torch.tensor(labels), list(names), **kw)


def test_merge_dedups_an_object_seen_by_two_overlapping_tiles():
    cfg = resolve_test_cfg(rtmdet.create("rtmdet-tiny").test_cfg, nms_iou=0.5)
    # one object at x 900..1000 in the image: tile 0 (origin 0) and tile 1 (origin 824) see it
    a = _dets([[900, 100, 1000, 200], [10, 10, 50, 50]], [0.9, 0.7], [0, 1])
    b = _dets([[76, 101, 176, 199], [76, 100, 176, 200], [300, 300, 400, 420]], [0.8, 0.6, 0.5], [0, 1, 0])
    m = get_family("detect").merge([a, b], np.array([[0, 0], [824, 0]]), (600, 1300), cfg)
    got = sorted(zip(m.scores.tolist(), m.labels.tolist(), m.boxes.tolist()), reverse=True)
    assert [(round(s, 2), lb) for s, lb, _ in got] == [(0.9, 0), (0.7, 1), (0.6, 1), (0.5, 0)]
    assert got[3][2] == [1124, 300, 1224, 420] and got[2][2] == [900, 100, 1000, 200]  # other class kept

    # rotated: the centres shift, rotated NMS removes the twin
    r = get_family("rotated")
    ra = _dets([[0, 0, 1, 1]] * 2, [0.9, 0.4], [3, 3], names=[str(i) for i in range(15)],
               rboxes=torch.tensor([[950.0, 150, 100, 40, 0.3], [20, 20, 10, 10, 0.0]]))
    rb = _dets([[0, 0, 1, 1]], [0.8], [3], names=[str(i) for i in range(15)],
               rboxes=torch.tensor([[126.0, 151, 98, 40, 0.31]]))
    rm = r.merge([ra, rb], np.array([[0, 0], [824, 0]]), (600, 1300), resolve_test_cfg(cfg, nms_iou=0.1))
    assert rm.scores.tolist() == pytest.approx([0.9, 0.4]) and rm.rboxes[0, 0] == 950
    torch.testing.assert_close(rm.boxes, torch.cat([rm.polygons().amin(1), rm.polygons().amax(1)], 1))


# ---------------------------------------------------------------------------- segment, rotated, graphs

def test_segment_tiles_paste_each_kept_mask_into_the_image():
    model = rtmdet.load(need(INS_FIX / "weights.pth"))
    img = cv2.resize(load_fixture(INS_FIX / "predict_large.pth")["image_bgr"].numpy(), (900, 700))
    knobs = dict(score_thr=0.001, imgsz=320, max_per_img=20)
    cfg = resolve_test_cfg(model.test_cfg, **knobs)
    [(dets, offsets)] = predict_patches(TorchBackend(model), [img], cfg, 640, 100)
    tiled = model.predict(img, tile=640, overlap=100, **knobs)
    assert tiled.masks.shape == (len(tiled), 700, 900) and 0 < len(tiled) <= 20
    for k in range(min(len(tiled), 5)):  # find its patch detection and compare the pasted mask
        hit = [(p, r) for p, d in enumerate(dets) for r in range(len(d))
               if d.scores[r] == tiled.scores[k] and d.labels[r] == tiled.labels[k]]
        p, r = hit[0]
        x, y = offsets[p]
        want = torch.zeros(700, 900, dtype=torch.bool)
        want[y:y + 640, x:x + 640] = dets[p].masks[r][: 700 - y, : 900 - x]
        assert torch.equal(tiled.masks[k], want)


def test_rotated_tiles_shift_centres_back():
    model = rtmdet.load(need(ROT_FIX / "weights.pth"))
    img = load_fixture(ROT_FIX / "predict_portrait.pth")["image_bgr"].numpy()  # 700 x 500
    cfg = resolve_test_cfg(model.test_cfg, imgsz=256)
    [(dets, offsets)] = predict_patches(TorchBackend(model), [img], cfg, 512, 128)
    assert offsets.tolist() == [[0, 0], [0, 188]]  # w 500 < 512: one padded column
    tiled = model.predict(img, tile=512, overlap=128, imgsz=256)
    assert tiled.rboxes.shape == (len(tiled), 5) and tiled.image_shape == (700, 500)
    allr = torch.cat([d.rboxes + torch.tensor([float(x), float(y), 0, 0, 0])
                      for d, (x, y) in zip(dets, offsets)])
    for b in tiled.rboxes[:50]:
        assert float((allr - b).abs().max(1)[0].min()) < 1e-4
    assert len(tiled) < len(allr)


def test_onnx_detector_tiles_like_pytorch(det_model, big_image, tmp_path):
    pytest.importorskip("onnxruntime")
    from rtmdet.deploy.onnx import export_onnx
    from rtmdet.inference import Detector
    path = export_onnx(det_model, tmp_path / "d.onnx", imgsz=128, dynamic=True)
    img = np.ascontiguousarray(big_image[:640, :800])  # two windows
    ours = Detector(path).predict(img, tile=640, overlap=100, imgsz=320, batch_size=2)
    ref = det_model.predict(img, tile=640, overlap=100, imgsz=320)
    assert len(ours) == len(ref) > 0
    assert match_detections(ours.boxes, ours.scores, ours.labels, ref.boxes, ref.scores, ref.labels,
                            score_tol=1e-4, box_tol=1e-2) <= math.ceil(0.01 * len(ref))


def test_merge_of_patches_without_detections_is_empty():
    cfg = rtmdet.create("rtmdet-tiny").test_cfg
    offsets = np.array([[0, 0], [500, 0]])
    e = _dets(np.zeros((0, 4)), [], [])
    assert len(get_family("detect").merge([e, e], offsets, (600, 1000), cfg)) == 0
    em = Detections(e.boxes, e.scores, e.labels, ["a"], masks=torch.zeros(0, 640, 640, dtype=torch.bool))
    m = get_family("segment").merge([em, em], offsets, (600, 1000), cfg)
    assert len(m) == 0 and m.masks.shape == (0, 600, 1000)
    er = Detections(e.boxes, e.scores, e.labels, ["a"], rboxes=torch.zeros(0, 5))
    r = get_family("rotated").merge([er, er], offsets, (600, 1000), cfg)
    assert len(r) == 0 and r.rboxes.shape == (0, 5) and r.boxes.shape == (0, 4)
