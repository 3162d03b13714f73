"""DOTA mAP against an independent plain-Python implementation of mmrotate's eval_rbbox_map
(shapely IoU, loops, Python floats) and hand-made cases."""
import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from rtmdet.eval.dota import IOU_THRS_50_95, evaluate_rotated, format_table


def corners(b):
    cx, cy, w, h, t = (float(v) for v in b)
    c, s = math.cos(t), math.sin(t)
    return [(cx + c * sx * w / 2 - s * sy * h / 2, cy + s * sx * w / 2 + c * sy * h / 2)
            for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1))]


def iou(a, b):
    if a[2] * a[3] < 1e-14 or b[2] * b[3] < 1e-14:
        return 0.0
    inter = Polygon(corners(a)).intersection(Polygon(corners(b))).area
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def voc_ap(rec, prec, mode):
    if mode == "11points":
        total = 0.0
        for k in range(11):
            t = k * 0.1  # the values np.arange(0, 1.001, 0.1) takes (0.30000000000000004, ...)
            ps = [p for r, p in zip(rec, prec) if r >= t]
            total += max(ps) if ps else 0.0
        return total / 11
    mrec, mpre = [0.0] + list(rec) + [1.0], [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def reference_map(gts, dets, num_classes, thr, mode):
    """mmrotate's rules, one detection at a time: match the argmax-IoU gt of the class (difficult
    ones included, non-difficult first); difficult -> ignored, uncovered -> TP, else FP."""
    aps, counted = [], []
    for c in range(num_classes):
        records, npos = [], 0
        for g, d in zip(gts, dets):
            gb = [list(map(float, b)) for b, l, f in zip(g["boxes"], g["labels"], g["difficult"]) if l == c and not f]
            ign = [list(map(float, b)) for b, l, f in zip(g["boxes"], g["labels"], g["difficult"]) if l == c and f]
            npos += len(gb)
            allg, flags = gb + ign, [False] * len(gb) + [True] * len(ign)
            mine = sorted([(float(s), list(map(float, b))) for b, s, l in zip(d["boxes"], d["scores"], d["labels"]) if l == c],
                          key=lambda x: -x[0])
            covered = [False] * len(allg)
            for s, b in mine:
                if not allg:
                    records.append((s, 0, 1))
                    continue
                ious = [iou(b, x) for x in allg]
                k = max(range(len(allg)), key=lambda i: (ious[i], -i))
                if ious[k] >= thr:
                    if flags[k]:
                        continue
                    if not covered[k]:
                        covered[k] = True
                        records.append((s, 1, 0))
                    else:
                        records.append((s, 0, 1))
                else:
                    records.append((s, 0, 1))
        records.sort(key=lambda r: -r[0])
        tp = fp = 0
        rec, prec = [], []
        for _, t, f in records:
            tp, fp = tp + t, fp + f
            rec.append(tp / max(npos, np.finfo(np.float32).eps))
            prec.append(tp / max(tp + fp, np.finfo(np.float32).eps))
        aps.append(voc_ap(rec, prec, mode))
        counted.append(npos > 0)
    used = [a for a, k in zip(aps, counted) if k]
    return (sum(used) / len(used) if used else 0.0), aps


def random_dataset(seed, n_img=6, num_classes=4):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(n_img):
        n = int(rng.integers(0, 9))
        b = np.c_[rng.uniform(0, 150, (n, 2)), rng.uniform(8, 40, (n, 2)), rng.uniform(-1.6, 1.6, n)]
        lab = rng.integers(0, num_classes, n)
        gts.append(dict(boxes=b, labels=lab, difficult=rng.random(n) < 0.2))
        # jittered copies (some twice), plus random false positives
        src = rng.integers(0, max(n, 1), int(rng.integers(0, 2 * n + 1))) if n else np.zeros(0, int)
        jit = b[src] + rng.normal(0, 1, (len(src), 5)) * [2, 2, 3, 3, 0.08] if n else np.zeros((0, 5))
        fp = np.c_[rng.uniform(0, 150, (3, 2)), rng.uniform(8, 40, (3, 2)), rng.uniform(-1.6, 1.6, 3)]
        boxes = np.concatenate([jit, fp]).astype(np.float32)
        labels = np.concatenate([lab[src] if n else np.zeros(0, int), rng.integers(0, num_classes, 3)])
        dets.append(dict(boxes=boxes, scores=rng.permutation(len(boxes)).astype(np.float32) / 100 + rng.random(),
                         labels=labels))
    return gts, dets


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["11points", "area"])
def test_matches_independent_reference(seed, mode):
    gts, dets = random_dataset(seed)
    for d in dets:  # distinct scores within an image: no tie-order ambiguity for the reference
        d["scores"] = d["scores"] + np.arange(len(d["scores"]), dtype=np.float32) * 1e-3
    thrs = (0.5, 0.75) if seed % 2 else (0.5,)
    res = evaluate_rotated(gts, dets, 4, iou_thrs=thrs, eval_mode=mode)
    means = []
    for t, thr in enumerate(thrs):
        m, aps = reference_map(gts, dets, 4, thr, mode)
        assert [pc["ap"][t] for pc in res["per_class"]] == pytest.approx(aps, abs=2e-6)
        assert res[f"AP{round(thr * 100)}"] == pytest.approx(m, abs=2e-6)
        means.append(m)
    assert res["mAP"] == pytest.approx(sum(means) / len(means), abs=2e-6)
    assert any(0 < a < 1 for pc in res["per_class"] for a in pc["ap"])
    for c, pc in enumerate(res["per_class"]):
        assert pc["num_gts"] == sum(int(((g["labels"] == c) & ~g["difficult"]).sum()) for g in gts)
        assert pc["num_dets"] == sum(int((d["labels"] == c).sum()) for d in dets)


def box(cx, cy, w=20.0, h=10.0, t=0.3):
    return [cx, cy, w, h, t]


def test_perfect_detections_give_one_and_false_positives_zero():
    gts = [dict(boxes=np.array([box(10, 10), box(60, 60)]), labels=np.array([0, 1]), difficult=np.zeros(2, bool)),
           dict(boxes=np.array([box(30, 80)]), labels=np.array([1]), difficult=np.zeros(1, bool))]
    perfect = [dict(boxes=g["boxes"], scores=np.linspace(0.9, 0.5, len(g["labels"])), labels=g["labels"]) for g in gts]
    for mode in ("11points", "area"):
        res = evaluate_rotated(gts, perfect, 2, iou_thrs=IOU_THRS_50_95, eval_mode=mode)
        assert res["mAP"] == pytest.approx(1.0) and res["AP50"] == pytest.approx(1.0)
        assert res["AP95"] == pytest.approx(1.0)
    # the same boxes as seen by a box shifted by 180 degrees (same rectangle) are still perfect
    turned = [dict(d, boxes=np.asarray(d["boxes"]) + [0, 0, 0, 0, math.pi]) for d in perfect]
    assert evaluate_rotated(gts, turned, 2)["mAP"] == pytest.approx(1.0)
    wrong = [dict(boxes=np.asarray(g["boxes"]) + [200, 0, 0, 0, 0], scores=np.ones(len(g["labels"])), labels=g["labels"])
             for g in gts]
    res = evaluate_rotated(gts, wrong, 2)
    assert res["mAP"] == 0.0 and all(pc["recall"] == [0.0] for pc in res["per_class"])
    # tensors are accepted too
    tens = [{k: torch.as_tensor(v) for k, v in d.items()} for d in perfect]
    assert evaluate_rotated(gts, tens, 2)["mAP"] == pytest.approx(1.0)


def test_difficult_ground_truth_is_ignored():
    gts = [dict(boxes=np.array([box(10, 10), box(60, 60)]), labels=np.array([0, 1]), difficult=np.array([False, True]))]
    dets = [dict(boxes=np.array([box(10, 10), box(60, 60), box(120, 120)]), scores=np.array([0.9, 0.95, 0.1]),
                 labels=np.array([0, 1, 0]))]
    res = evaluate_rotated(gts, dets, 2)
    # class 1 has only a difficult gt: no gts, excluded from the mean; its matching det is neither TP nor FP
    assert res["per_class"][1]["num_gts"] == 0 and res["per_class"][1]["num_dets"] == 1
    assert res["per_class"][1]["ap"] == [0.0]
    # class 0: TP then FP -> recall 1 reached at precision 1
    assert res["per_class"][0]["ap"] == [pytest.approx(1.0)]
    assert res["mAP"] == pytest.approx(1.0)
    # a det matching a difficult gt of its own class is ignored (not an FP) even before the TP
    gts = [dict(boxes=np.array([box(10, 10), box(60, 60)]), labels=np.array([0, 0]), difficult=np.array([False, True]))]
    dets = [dict(boxes=np.array([box(60, 60), box(10, 10)]), scores=np.array([0.9, 0.5]), labels=np.array([0, 0]))]
    assert evaluate_rotated(gts, dets, 1)["mAP"] == pytest.approx(1.0)


def test_argmax_match_to_a_covered_gt_is_a_false_positive():
    # two gts overlapping; the second det's best gt is already taken although the other one
    # would match at IoU >= 0.5: mmrotate counts it as an FP (no fall-back to the next gt)
    g = np.array([box(0, 0, 20, 10, 0), box(3, 0, 20, 10, 0)])
    gts = [dict(boxes=g, labels=np.array([0, 0]), difficult=np.zeros(2, bool))]
    d = np.array([box(0.5, 0, 20, 10, 0), box(1.2, 0, 20, 10, 0)])
    assert iou(d[1], g[0]) > iou(d[1], g[1]) > 0.5
    dets = [dict(boxes=d, scores=np.array([0.9, 0.8]), labels=np.array([0, 0]))]
    res = evaluate_rotated(gts, dets, 1, eval_mode="area")
    assert res["per_class"][0]["recall"] == [0.5]
    assert res["mAP"] == pytest.approx(0.5)


def test_empty_classes_and_images():
    gts = [dict(boxes=np.zeros((0, 5)), labels=np.zeros(0, int), difficult=np.zeros(0, bool)),
           dict(boxes=np.array([box(10, 10)]), labels=np.array([2]), difficult=np.zeros(1, bool))]
    dets = [dict(boxes=np.array([box(10, 10)]), scores=np.array([0.99]), labels=np.array([2])),  # FP: image without gts
            dict(boxes=np.zeros((0, 5)), scores=np.zeros(0), labels=np.zeros(0, int))]
    res = evaluate_rotated(gts, dets, 3)
    assert [pc["num_gts"] for pc in res["per_class"]] == [0, 0, 1]
    assert res["per_class"][2]["ap"] == [0.0] and res["mAP"] == 0.0  # the only det is an FP, the gt is missed
    # no gts anywhere: mAP is 0 by definition
    none = [dict(boxes=np.zeros((0, 5)), labels=np.zeros(0, int), difficult=np.zeros(0, bool))]
    assert evaluate_rotated(none, dets[:1], 3)["mAP"] == 0.0
    # 11-point quirk kept: recall 3/10 is below the threshold 0.1 * 3 = 0.30000000000000004
    g = np.array([box(40 * i, 0) for i in range(10)])
    gts = [dict(boxes=g, labels=np.zeros(10, int), difficult=np.zeros(10, bool))]
    dets = [dict(boxes=g[:3], scores=np.array([0.9, 0.8, 0.7]), labels=np.zeros(3, int))]
    res = evaluate_rotated(gts, dets, 1)
    assert res["mAP"] == pytest.approx(3 / 11)  # r >= 0, 0.1, 0.2 count; 0.3 does not
    assert res["mAP"] == pytest.approx(reference_map(gts, dets, 1, 0.5, "11points")[0])


def test_format_table_lists_classes_and_map():
    gts, dets = random_dataset(7)
    res = evaluate_rotated(gts, dets, 4, iou_thrs=IOU_THRS_50_95)
    text = format_table(res, ["plane", "ship", "storage-tank", "harbor"])
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["class", "gts", "dets", "recall", "AP50"] and lines[0].split()[-1] == "AP95"
    assert any(line.startswith("storage-tank") for line in lines)
    assert f"{res['AP50']:.3f}" in [l for l in lines if l.startswith("mAP ")][0]
    assert lines[-1].endswith(f"{res['mAP']:.3f}")
