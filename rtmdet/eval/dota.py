"""DOTA-style mAP for rotated boxes, as mmrotate's `DOTAMetric` / `eval_rbbox_map` compute it.

Per class and IoU threshold (VOC style, rotated IoU from `box_iou_rotated`):
- per image, detections are taken by descending score; each one is matched to the gt (of its
  class, difficult ones included) with the largest IoU (first on ties, non-difficult gts first). If
  that IoU >= thr: a difficult gt -> neither TP nor FP; a gt not yet covered -> TP; else FP (even
  when another gt would also match). Below thr -> FP.
- all images' detections sorted by score, cumulative TP/FP, recall = TP / max(#gts, eps),
  precision = TP / max(TP + FP, eps); AP by '11points' (DOTAMetric's default) or 'area'.
- mAP averages the classes with at least one (non-difficult) gt; 0 when there is none. With
  several thresholds `mAP` is the mean of the per-threshold mAPs (e.g. `IOU_THRS_50_95`).
The dtypes follow the reference (float32 TP/FP/precision/AP, float64 recall, numpy's default sort)
so results are the reference's to the last bit, except where its float32 IoU kernel is inexact.

Note: mmrotate's DOTADataset (diff_thr=100) flags no gt as difficult; pass `difficult=False`
everywhere to reproduce its numbers, or DOTA's difficult flags for the official protocol.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ops.rotated import box_iou_rotated

IOU_THRS_50_95 = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_EPS = np.finfo(np.float32).eps


def _tpfp(ious: np.ndarray, scores: np.ndarray, gt_ignore: np.ndarray, iou_thrs) -> tuple[np.ndarray, np.ndarray]:
    """(T, m) float32 TP and FP flags of one image's detections of one class, in input order,
    from their (m, n) IoUs with the class's gts (non-difficult first).

    Each detection is matched to its argmax-IoU gt regardless of earlier matches, so in score
    order the first detection per gt is the TP and the later ones are FPs (vectorised)."""
    m = len(scores)
    tp = np.zeros((len(iou_thrs), m), dtype=np.float32)
    fp = np.zeros((len(iou_thrs), m), dtype=np.float32)
    if len(gt_ignore) == 0:
        fp[...] = 1
        return tp, fp
    if m == 0:
        return tp, fp
    order = np.argsort(-scores)
    best, which = ious.max(1)[order], ious.argmax(1)[order]
    for t, thr in enumerate(iou_thrs):
        hit = best >= np.float32(thr)
        counted = hit & ~gt_ignore[which]
        idx = np.flatnonzero(counted)
        first = np.zeros(m, dtype=bool)
        first[idx[np.unique(which[idx], return_index=True)[1]]] = True
        tp[t, order] = first
        fp[t, order] = (counted & ~first) | ~hit
    return tp, fp


def average_precision(recalls: np.ndarray, precisions: np.ndarray, mode: str = "11points") -> np.float32:
    """VOC AP of one PR curve: '11points' = mean over r in {0, 0.1, .., 1} of the best precision at
    recall >= r (0 if none); 'area' = area under the monotone precision envelope."""
    if mode == "area":
        mrec = np.concatenate([[0.0], recalls, [1.0]])
        mpre = np.concatenate([[0.0], precisions, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        i = np.flatnonzero(mrec[1:] != mrec[:-1])
        return np.float32(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    if mode != "11points":
        raise ValueError(f"eval_mode must be '11points' or 'area', got {mode!r}")
    ap = np.float32(0)
    for thr in np.arange(0, 1 + 1e-3, 0.1):
        precs = precisions[recalls >= thr]
        ap += precs.max() if precs.size else np.float32(0)
    return np.float32(ap / np.float32(11))


def _as_arrays(gt: dict, det: dict):
    """float32 boxes/scores (as the reference's per-class arrays) and int labels / bool flags."""
    labels = np.asarray(gt["labels"]).reshape(-1)
    gt_boxes = np.asarray(gt["boxes"], dtype=np.float32).reshape(-1, 5)
    difficult = np.asarray(gt.get("difficult", np.zeros(len(labels), bool)), dtype=bool).reshape(-1)
    boxes = np.asarray(det["boxes"], dtype=np.float32).reshape(-1, 5)
    scores = np.asarray(det["scores"], dtype=np.float32).reshape(-1)
    return gt_boxes, labels, difficult, boxes, scores, np.asarray(det["labels"]).reshape(-1)


def evaluate_rotated(gts: list[dict], dets: list[dict], num_classes: int, iou_thrs=(0.5,),
                     eval_mode: str = "11points") -> dict:
    """DOTA mAP over images.

    gts[i]: `boxes` (n, 5), `labels` (n,), optional `difficult` (n,) bool (ignored gts).
    dets[i]: `boxes` (k, 5), `scores` (k,), `labels` (k,) (numpy or tensors).
    Returns {'mAP', 'AP50', 'AP55', ... (one per threshold), 'iou_thrs', 'per_class': [{'num_gts',
    'num_dets', 'recall' (final recall per threshold), 'ap' (per threshold)}]}."""
    if len(gts) != len(dets):
        raise ValueError("gts and dets must have one entry per image")
    iou_thrs = [float(t) for t in np.atleast_1d(iou_thrs)]
    dets = [{k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in d.items()} for d in dets]
    gts = [{k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in g.items()} for g in gts]
    tps, fps, scores_all = ([[] for _ in range(num_classes)] for _ in range(3))
    num_gts = [0] * num_classes
    for gt, det in zip(gts, dets):
        gt_boxes, gt_labels, difficult, boxes, scores, labels = _as_arrays(gt, det)
        # one IoU matrix per image; the reference's per-class calls give the same pairwise values
        ious = (box_iou_rotated(torch.from_numpy(boxes), torch.from_numpy(gt_boxes)).numpy()
                if len(boxes) and len(gt_boxes) else np.zeros((len(boxes), len(gt_boxes)), np.float32))
        for c in range(num_classes):
            sel = np.flatnonzero(labels == c)
            # the class's gts, non-difficult first: the reference stacks them so (argmax ties)
            cols = np.concatenate([np.flatnonzero((gt_labels == c) & ~difficult),
                                   np.flatnonzero((gt_labels == c) & difficult)])
            ignore = difficult[cols]
            num_gts[c] += int((~ignore).sum())
            tp, fp = _tpfp(ious[np.ix_(sel, cols)], scores[sel], ignore, iou_thrs)
            tps[c].append(tp)
            fps[c].append(fp)
            scores_all[c].append(scores[sel])
    per_class = []
    for c in range(num_classes):
        scores = np.concatenate(scores_all[c]) if gts else np.zeros(0, np.float32)
        order = np.argsort(-scores)
        tp = np.cumsum(np.hstack(tps[c])[:, order], axis=1) if gts else np.zeros((len(iou_thrs), 0), np.float32)
        fp = np.cumsum(np.hstack(fps[c])[:, order], axis=1) if gts else np.zeros((len(iou_thrs), 0), np.float32)
        recalls = tp / np.maximum(np.float64(num_gts[c]), np.float64(_EPS))
        precisions = tp / np.maximum(tp + fp, _EPS)
        aps = [average_precision(recalls[t], precisions[t], eval_mode) for t in range(len(iou_thrs))]
        per_class.append({
            "num_gts": num_gts[c],
            "num_dets": int(len(scores)),
            "recall": [float(r[-1]) if r.size else 0.0 for r in recalls],
            "ap": [float(a) for a in aps],
        })
    result: dict = {"iou_thrs": iou_thrs, "per_class": per_class}
    means = []
    for t, thr in enumerate(iou_thrs):
        aps = [np.float32(pc["ap"][t]) for pc in per_class if pc["num_gts"] > 0]
        mean_ap = np.array(aps, dtype=np.float32).mean().item() if aps else 0.0
        result[f"AP{round(thr * 100):02d}"] = mean_ap
        means.append(mean_ap)
    result["mAP"] = sum(means) / len(means)
    return result


def format_table(result: dict, class_names) -> str:
    """Plain-text table: class, gts, dets, recall (first threshold), AP per threshold, mAP row."""
    thrs = result["iou_thrs"]
    head = ["class", "gts", "dets", "recall"] + [f"AP{round(t * 100):02d}" for t in thrs]
    rows = [head]
    for name, pc in zip(class_names, result["per_class"]):
        rows.append([str(name), str(pc["num_gts"]), str(pc["num_dets"]), f"{pc['recall'][0]:.3f}"]
                    + [f"{a:.3f}" for a in pc["ap"]])
    rows.append(["mAP", "", "", ""] + [f"{result[f'AP{round(t * 100):02d}']:.3f}" for t in thrs])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def fmt(r):
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    rule = "-" * len(fmt(head))
    out = [fmt(head), rule] + [fmt(r) for r in rows[1:-1]] + [rule, fmt(rows[-1])]
    if len(thrs) > 1:
        out.append(f"mAP over IoU {thrs[0]:.2f}:{thrs[-1]:.2f} = {result['mAP']:.3f}")
    return "\n".join(out)


__all__ = ["IOU_THRS_50_95", "average_precision", "evaluate_rotated", "format_table"]
