"""RTMDet-R (rotated family) against the mmrotate 1.x reference fixtures
(shared/fixtures/rotated_rtmdet_tiny-3x-dota, see its README): checkpoint layout, parameter
counts, raw network outputs, and the whole inference path compared as detection sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rtmdet
from rtmdet import presets
from rtmdet.data.dota import DOTA_V1_CLASSES
from rtmdet.detections import Detections
from rtmdet.families import family_of_state_dict, get_family

from helpers import FIXTURES, load_fixture, need

ROT_FIX = FIXTURES / "rotated_rtmdet_tiny-3x-dota"
# README: sum(p.numel()) of the models built from the configs (= mmrotate's zoo 4.88/8.86/24.67/52.27M)
REF_PARAMS = {"tiny": 4_877_544, "s": 8_862_156, "m": 24_672_132, "l": 52_266_460}


@pytest.fixture(scope="module")
def ckpt():
    return load_fixture(ROT_FIX / "weights.pth")


@pytest.fixture(scope="module")
def model(ckpt):
    m = rtmdet.create("rtmdet-r-tiny").eval()
    m.load_state_dict(ckpt["state_dict"], strict=True)
    return m


@pytest.fixture(scope="module")
def predicted(model):
    """case -> (fixture, our Detections of its image): each 1024 inference runs once."""
    cache = {}

    def get(case):
        if case not in cache:
            fix = load_fixture(ROT_FIX / f"predict_{case}.pth")
            cache[case] = fix, model.predict(fix["image_bgr"].numpy())
        return cache[case]
    return get


def _keys_txt():
    rows = []
    for line in need(ROT_FIX / "keys.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        rows.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    return rows


# ---------------------------------------------------------------------------- model and weights

def test_state_dict_layout_equals_keys_txt_and_loads_strictly(ckpt):
    m = rtmdet.create("rtmdet-r-tiny")
    ours = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert ours == _keys_txt()  # same keys, same order, same shapes
    assert len(ours) == 482 and any(k == "bbox_head.rtm_ang.2.bias" for k, _ in ours)
    sd = ckpt["state_dict"]
    assert list(sd) == [k for k, _ in ours]
    m.load_state_dict(sd, strict=True)  # no renaming
    # shared head convs: one tensor per level in the file, one parameter in the model
    assert m.bbox_head.cls_convs[2][1].conv is m.bbox_head.cls_convs[0][1].conv
    assert torch.equal(sd["bbox_head.reg_convs.2.0.conv.weight"], sd["bbox_head.reg_convs.0.0.conv.weight"])


def test_checkpoint_is_recognised_as_rotated_and_rebuilt_by_load(ckpt):
    assert family_of_state_dict(ckpt["state_dict"]).name == "rotated"  # before "detect"
    m = rtmdet.load(ROT_FIX / "weights.pth")
    assert m.family.name == "rotated" and m.cfg.num_classes == 15 and m.cfg.widen_factor == 0.375
    assert m.cfg.exp_on_reg is False and m.cfg.angle_version == "le90"
    assert m.class_names == list(DOTA_V1_CLASSES)
    assert (m.test_cfg.score_thr, m.test_cfg.nms_pre, m.test_cfg.nms_iou, m.test_cfg.max_per_img,
            m.test_cfg.imgsz) == (0.05, 2000, 0.1, 2000, 1024)


@pytest.mark.parametrize("size", ["tiny", "s", "m", "l"])
def test_parameter_count_of_every_size_equals_the_reference(size):
    rec = presets.get_record(f"rtmdet-r-{size}")
    m = rtmdet.create(rec.name)
    assert m.cfg.family == "rotated" and m.cfg.num_classes == 15
    assert sum(p.numel() for p in m.parameters()) == REF_PARAMS[size]
    assert rec.params_m == pytest.approx(REF_PARAMS[size] / 1e6, abs=5e-4)


def test_presets_carry_the_published_figures_and_test_settings():
    want = {"tiny": (75.60, "9d821076"), "s": (76.93, "11f6ccf5"), "m": (78.24, "beeadda6"),
            "l": (78.85, "23992372")}
    for size, (map50, stamp) in want.items():
        rec = presets.get_record(f"rtmdet-r-{size}")
        assert rec.box_ap == map50 and rec.url.endswith(f"-{stamp}.pth") and rec.imgsz == 1024
        assert rec.model_config().exp_on_reg == (size in ("m", "l"))  # config.json: False for tiny/s
        t = rec.test_config()
        assert (t.score_thr, t.nms_pre, t.nms_iou, t.max_per_img, t.min_bbox_size) == (0.05, 2000, 0.1, 2000, 0)
    coco = presets.get_record("rtmdet-r-l-coco")
    assert coco.box_ap == 81.33 and coco.family == "rotated" and coco.size == "l"
    import json
    cfg = json.loads(need(ROT_FIX / "config.json").read_text())["model"]
    rec = presets.get_record("rtmdet-r-tiny")
    assert list(rec.mean) == cfg["data_preprocessor"]["mean"] and list(rec.std) == cfg["data_preprocessor"]["std"]
    head = cfg["bbox_head"]
    mc = rec.model_config()
    assert (head["num_classes"], head["feat_channels"], head["stacked_convs"], head["share_conv"],
            head["exp_on_reg"], head["angle_version"]) == \
        (mc.num_classes, mc.feat_channels, mc.stacked_convs, mc.share_conv, mc.exp_on_reg, mc.angle_version)


def test_tiny_gmacs_agree_with_a_flop_count():
    from torch.utils.flop_counter import FlopCounterMode
    m = rtmdet.create("rtmdet-r-tiny").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.zeros(1, 3, 512, 512))  # all convolutions: 4x as many at 1024
    assert 4 * fc.get_total_flops() / 2e9 == pytest.approx(presets.get_record("rtmdet-r-tiny").gmacs, abs=0.2)


# ---------------------------------------------------------------------------- raw outputs

def _close(ours, ref, what):
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, f"{what}[{i}]"
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"{what}[{i}]: {m}")


@pytest.mark.parametrize("case", ["rect", "square"])
def test_forward_matches_the_reference(model, case):
    ref = load_fixture(ROT_FIX / "forward.pth")[case]
    x = ref["input"].float()
    with torch.no_grad():
        feats = model.backbone(x)
        neck = model.neck(feats)
        head = model.bbox_head(neck)
    if "backbone" in ref:
        _close(feats, ref["backbone"], "backbone")
        _close(neck, ref["neck"], "neck")
    assert len(head) == 3 and [t.shape[1] for t in (head[0][0], head[1][0], head[2][0])] == [15, 4, 1]
    for part, name in zip(range(3), ("cls", "reg", "angle")):
        _close(head[part], ref["head"][part], f"head.{name}")


# ---------------------------------------------------------------------------- whole path

def _angle_diff(a, b):
    d = np.mod(a - b, np.pi)
    return np.minimum(d, np.pi - d)


def match_rotated(rb, rs, rl, ref_b, ref_s, ref_l, score_tol=1e-4, px=0.05, rel=2e-4, ang=2e-3):
    """README's set matching: one-to-one, same label, score within `score_tol`, (cx, cy, w, h)
    within `px` + `rel` x box size, theta within `ang` modulo pi. Greedy over the reference in
    its order, each taking the closest-scoring free partner. Returns (unmatched reference
    indices, unmatched indices of ours, max |d score|, max |d box| px, max d theta)."""
    rb, rs, rl = (np.asarray(t, np.float64) for t in (rb, rs, rl))
    ref_b, ref_s, ref_l = (np.asarray(t, np.float64) for t in (ref_b, ref_s, ref_l))
    free = np.ones(len(rs), bool)
    lost, ds, db, dt = [], 0.0, 0.0, 0.0
    for i in range(len(ref_s)):
        tol = px + rel * np.abs(ref_b[i, 2:4]).max()
        dscore = np.abs(rs - ref_s[i])
        dbox = np.abs(rb[:, :4] - ref_b[i, :4]).max(axis=1)
        dth = _angle_diff(rb[:, 4], ref_b[i, 4])
        ok = free & (rl == ref_l[i]) & (dscore <= score_tol) & (dbox <= tol) & (dth <= ang)
        cand = np.flatnonzero(ok)
        if len(cand) == 0:
            lost.append(i)
            continue
        j = cand[np.argmin(dscore[cand])]
        free[j] = False
        ds, db, dt = max(ds, dscore[j]), max(db, dbox[j]), max(dt, dth[j])
    return np.array(lost, int), np.flatnonzero(free), ds, db, dt


def explain_twins(lost, extra, rb, rs, rl, ref_b, ref_s, ref_l, score_tol=1e-5, tol=0.05, ang=2e-3):
    """Pairs (reference, ours) left unmatched that are near-tie swaps: same label, scores within
    `score_tol`, same w, h and theta (NMS kept the other member of an overlapping twin pair).
    Returns the indices still unexplained on each side."""
    rb, rs, rl = (np.asarray(t, np.float64) for t in (rb, rs, rl))
    ref_b, ref_s, ref_l = (np.asarray(t, np.float64) for t in (ref_b, ref_s, ref_l))
    extra = list(extra)
    left = []
    for i in lost:
        hit = [j for j in extra if rl[j] == ref_l[i] and abs(rs[j] - ref_s[i]) <= score_tol
               and np.abs(rb[j, 2:4] - ref_b[i, 2:4]).max() <= tol
               and _angle_diff(rb[j, 4], ref_b[i, 4]) <= ang]
        if hit:
            extra.remove(hit[0])
        else:
            left.append(i)
    return left, extra


def reference_input(fix, mean, std) -> torch.Tensor:
    """README: x = full((1,3,1024,1024), 114); x[0, :, :h', :w'] = resized; (x - mean) / std."""
    resized = fix["image_bgr"] if fix.get("resized_is_image") else fix["resized_bgr"]
    h, w = resized.shape[:2]
    x = torch.full((1, 3, 1024, 1024), 114.0)
    x[0, :, :h, :w] = resized.permute(2, 0, 1).float()
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("case", ["square", "portrait", "large"])
def test_predictions_match_the_reference_as_sets(model, predicted, case):
    fix, det = predicted(case)
    img = fix["image_bgr"].numpy()
    # the network input: our letterbox + normalisation equals the reference's, and the metas agree
    x, metas = model.preprocess([img], 1024)
    ref_x = reference_input(fix, model.cfg.mean, model.cfg.std)
    assert torch.equal(x, ref_x)
    assert metas[0].ori_shape == tuple(fix["meta"]["ori_shape"])
    assert metas[0].scale_factor == pytest.approx(tuple(fix["meta"]["scale_factor"]), abs=1e-12)

    assert det.rboxes is not None and det.rboxes.shape == (len(det), 5)
    ref_b, ref_s, ref_l = fix["bboxes"], fix["scores"], fix["labels"]
    # ordered by score, at most max_per_img, every box with w, h > 0
    assert bool((det.scores[1:] <= det.scores[:-1]).all()) and len(det) <= 2000
    assert bool((det.rboxes[:, 2:4] > 0).all()) and bool((det.scores > 0.05).all())
    lost, extra, ds, db, dt = match_rotated(det.rboxes, det.scores, det.labels, ref_b, ref_s, ref_l)
    lost2, extra2 = explain_twins(lost, extra, det.rboxes, det.scores, det.labels, ref_b, ref_s, ref_l)
    print(f"\n{case}: ours {len(det)} / reference {len(ref_s)}; unmatched {len(lost)} reference, "
          f"{len(extra)} ours; after near-tie swaps {len(lost2)} / {len(extra2)}; "
          f"max d score {ds:.1e}, d box {db:.1e} px, d theta {dt:.1e}")
    slack = math.floor(0.002 * len(ref_s))  # README: a few at the score/NMS thresholds
    assert len(lost2) <= slack and len(extra2) <= slack, (lost2, extra2)


# ---------------------------------------------------------------------------- Detections

def test_rotated_detections_api(predicted):
    fix, det = predicted("portrait")
    img = fix["image_bgr"].numpy()
    polys = det.polygons()
    assert polys.shape == (len(det), 4, 2)
    # boxes = the axis-aligned hull of the corners; the corners are centre +- R(theta)(w/2, h/2)
    torch.testing.assert_close(det.boxes, torch.cat([polys.amin(1), polys.amax(1)], 1))
    b = det.rboxes[0].double()
    c, s = math.cos(b[4]), math.sin(b[4])
    first = (b[0] + c * b[2] / 2 - s * b[3] / 2, b[1] + s * b[2] / 2 + c * b[3] / 2)
    assert polys[0, 0].double().tolist() == pytest.approx([float(v) for v in first], abs=1e-3)

    top = det.filter(0.1)
    assert len(top) == int((det.scores > 0.1).sum()) and top.rboxes.shape == (len(top), 5)
    d = top.to_dict()["detections"]
    assert len(d[0]["poly"]) == 8 and len(d[0]["rbox"]) == 5 and d[0]["name"] in DOTA_V1_CLASSES
    lines = top.to_txt().splitlines()
    assert len(lines) == len(top) and len(lines[0].split()) == 10 and lines[0].split()[8] in DOTA_V1_CLASSES
    n = top.numpy()
    assert isinstance(n.rboxes, np.ndarray) and n.polygons().shape == (len(top), 4, 2)
    drawn = top.draw(img)
    assert drawn.shape == img.shape and (drawn != img).any()

    rec = get_family("rotated").result_record(3, det)
    assert rec["rboxes"].shape == (len(det), 5) and rec["boxes"].shape == (len(det), 4)
    empty = get_family("rotated").empty_record(4)
    assert empty["rboxes"].shape == (0, 5) and len(empty["labels"]) == 0


def test_empty_input_gives_empty_detections(model):
    blank = np.full((300, 200, 3), 114, np.uint8)
    det = model.predict(blank, score_thr=0.999, imgsz=320)
    assert isinstance(det, Detections) and len(det) == 0 and det.rboxes.shape == (0, 5)
    assert det.polygons().shape == (0, 4, 2) and det.to_txt() == ""


def test_evaluate_scores_dota_map50_from_polygon_records():
    from rtmdet.data.records import DetectionDataset, ImageRecord
    from rtmdet.ops.rotated import obb2poly
    fam = get_family("rotated")
    gt = torch.tensor([[100.0, 80.0, 60.0, 20.0, 0.3], [300.0, 200.0, 50.0, 30.0, -1.0]])
    polys = obb2poly(gt).reshape(-1, 8).numpy()
    recs = [ImageRecord("a.png", 400, 300, 1, labels=np.array([2, 5]), polygons=polys),
            ImageRecord("b.png", 400, 300, 2, labels=np.array([2]), polygons=polys[:1])]
    ds = DetectionDataset(recs, list(DOTA_V1_CLASSES), list(range(15)))
    # image 1: both found (one written as the same box with w/h swapped, theta + pi/2); image 2: none
    found = torch.tensor([[100.0, 80.0, 20.0, 60.0, 0.3 + math.pi / 2], [300.0, 200.0, 50.0, 30.0, -1.0]])
    det = Detections(torch.zeros(2, 4), torch.tensor([0.9, 0.8]), torch.tensor([2, 5]),
                     list(DOTA_V1_CLASSES), rboxes=found)
    metrics = fam.evaluate(ds, [fam.result_record(1, det)])
    pc = metrics["rbox"]["per_class"]
    assert pc[5]["ap"][0] == pytest.approx(1.0) and pc[2]["recall"][0] == pytest.approx(0.5)
    assert fam.summary(metrics)["mAP50"] == pytest.approx((pc[2]["ap"][0] + 1.0) / 2)
    assert fam.fitness(fam.summary(metrics)) == fam.summary(metrics)["mAP50"]
