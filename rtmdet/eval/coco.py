"""COCO metrics through faster-coco-eval: the 12 standard numbers, a per-class AP table, and the
precision/recall arrays the plots read.

Detections come in either of two forms:

- per image: a list of dicts (or objects) with ``image_id``, ``boxes`` (N,4 xyxy, original pixels),
  ``scores`` (N,), ``labels`` (N, contiguous 0..C-1) and, for ``iou_type="segm"``, ``masks``
  (N,H,W bool) or ``segmentations`` (N COCO RLE dicts / polygons); a dict ``{image_id: result}``
  works too. numpy arrays, torch tensors and lists are accepted.
- a COCO results list: dicts with ``image_id``, ``category_id``, ``bbox`` (xywh), ``score``
  [, ``segmentation``].
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..data.records import DetectionDataset
from ..ops.boxes import box_iou

__all__ = [
    "METRIC_NAMES",
    "dataset_to_coco",
    "to_coco_results",
    "evaluate_coco",
    "format_table",
    "save_coco_json",
    "confusion_matrix",
]

log = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def dataset_to_coco(dataset: DetectionDataset) -> dict:
    """A COCO ground-truth dict (images, annotations, categories) for a `DetectionDataset`.

    Boxes become xywh, labels go back to ``dataset.cat_ids``; ``area`` is the source's when the
    reader kept it (``record.areas``), else the box area.
    """
    images, anns = [], []
    for r in dataset.records:
        images.append({"id": int(r.image_id), "file_name": os.path.basename(r.path), "width": int(r.width),
                       "height": int(r.height)})
        boxes = _np(r.boxes).astype(np.float64).reshape(-1, 4)
        for j, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            w, h = x2 - x1, y2 - y1
            ann = {
                "id": len(anns) + 1,
                "image_id": int(r.image_id),
                "category_id": int(dataset.cat_ids[int(r.labels[j])]),
                "bbox": [x1, y1, w, h],
                "area": float(r.areas[j]) if r.areas is not None else w * h,
                "iscrowd": int(bool(r.iscrowd[j])) if len(r.iscrowd) else 0,
            }
            if r.segmentations is not None:  # an instance without a mask: an empty one
                ann["segmentation"] = r.segmentations[j] or []
            anns.append(ann)
    cats = [{"id": int(c), "name": n} for c, n in zip(dataset.cat_ids, dataset.class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def _get(d, key, default=None):
    if isinstance(d, Mapping):
        return d.get(key, default)
    return getattr(d, key, default)


def _is_coco_results(dets) -> bool:
    return isinstance(dets, (list, tuple)) and len(dets) > 0 and isinstance(dets[0], Mapping) and "category_id" in dets[0]


def to_coco_results(detections, cat_ids: list[int] | None = None, iou_type: str = "bbox") -> list[dict]:
    """Convert per-image detections (see module doc) to a COCO results list.

    ``cat_ids``: contiguous label i -> category id ``cat_ids[i]`` (identity if None).
    A COCO results list is passed through (copied).
    """
    if isinstance(detections, (str, os.PathLike)):
        with open(detections) as f:
            detections = json.load(f)
    if isinstance(detections, Mapping):  # {image_id: result}
        items = [(iid, d) for iid, d in detections.items()]
    else:
        detections = list(detections)
        if not detections:
            return []
        if _is_coco_results(detections):
            return [dict(d) for d in detections]
        items = [(_get(d, "image_id"), d) for d in detections]
    out = []
    for iid, d in items:
        if iid is None:
            raise ValueError("each per-image detection result needs an 'image_id'")
        boxes = _np(_get(d, "boxes", np.zeros((0, 4)))).astype(np.float64).reshape(-1, 4)
        scores = _np(_get(d, "scores", np.zeros(0))).astype(np.float64).reshape(-1)
        labels = _np(_get(d, "labels", np.zeros(0))).astype(np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"image {iid}: boxes/scores/labels lengths differ "
                             f"({len(boxes)}/{len(scores)}/{len(labels)})")
        n_cls = len(cat_ids) if cat_ids is not None else None
        if len(labels) and (labels.min() < 0 or (n_cls is not None and labels.max() >= n_cls)):
            raise ValueError(f"image {iid}: label {int(labels.max() if labels.min() >= 0 else labels.min())} "
                             f"outside 0..{n_cls - 1 if n_cls is not None else 'C-1'}")
        segs = None
        if iou_type == "segm":
            segs = _get(d, "segmentations")
            if segs is None and _get(d, "masks") is not None:
                from faster_coco_eval.core import mask as mask_util

                m = _np(_get(d, "masks")).astype(np.uint8).reshape(len(boxes), *_np(_get(d, "masks")).shape[-2:])
                segs = mask_util.encode(np.asfortranarray(m.transpose(1, 2, 0))) if len(m) else []
            if segs is None:
                raise ValueError(f"image {iid}: iou_type='segm' needs 'masks' or 'segmentations'")
        iid = int(iid)
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        cats = [int(cat_ids[lab]) for lab in labels.tolist()] if cat_ids is not None else labels.tolist()
        for k, (cat, bb, sc) in enumerate(zip(cats, xywh.tolist(), scores.tolist())):
            res = {"image_id": iid, "category_id": cat, "bbox": bb, "score": sc}
            if segs is not None:
                s = segs[k]
                if isinstance(s, Mapping) and isinstance(s.get("counts"), bytes):
                    s = {"size": list(s["size"]), "counts": s["counts"].decode("ascii")}
                res["segmentation"] = s
            out.append(res)
    return out


def _gt_dict(gt) -> dict:
    if isinstance(gt, DetectionDataset):
        return dataset_to_coco(gt)
    if isinstance(gt, (str, os.PathLike)):
        p = Path(gt)
        try:
            with open(p) as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON ({e})") from None
    if isinstance(gt, Mapping):
        return dict(gt)
    raise TypeError(f"gt must be a DetectionDataset, a COCO dict or a json path, not {type(gt).__name__}")


def evaluate_coco(
    gt,
    detections,
    iou_type: str = "bbox",
    cat_ids: list[int] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """COCO evaluation of ``detections`` against ``gt`` with faster-coco-eval.

    ``gt``: a `DetectionDataset` (its ``cat_ids`` map contiguous labels back), a COCO gt dict, or a
    path to a COCO json. ``cat_ids`` overrides the label -> category mapping (for a COCO dict/path
    gt it defaults to the sorted gt category ids, i.e. the order `load_coco` uses).

    Returns a dict with the 12 numbers under `METRIC_NAMES` (floats; -1 where undefined, as COCO
    does), ``per_class`` (list of dicts: name, cat_id, AP, AP50, AP75, num_gt; AP is nan for a
    class without ground truth), ``class_names``, ``cat_ids``, and the raw ``precision``
    (T,R,K,A,M), ``recall`` (T,K,A,M), ``scores`` arrays with ``iou_thrs`` / ``rec_thrs``.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    gt_dict = _gt_dict(gt)
    cats = sorted(gt_dict.get("categories", []), key=lambda c: c["id"])
    gt_cat_ids = [int(c["id"]) for c in cats]
    if cat_ids is None:
        cat_ids = list(gt.cat_ids) if isinstance(gt, DetectionDataset) else gt_cat_ids
    if class_names is None:
        class_names = [str(c.get("name", c["id"])) for c in cats]
    results = to_coco_results(detections, cat_ids, iou_type)
    known_imgs = {im["id"] for im in gt_dict["images"]}
    stray = {r["image_id"] for r in results} - known_imgs
    if stray:
        raise ValueError(f"detections for image ids not in the ground truth: {sorted(stray)[:10]}")
    gt_dict.setdefault("annotations", [])
    # COCOeval reads 'area' and 'iscrowd'; fill them (box area, 0) where a hand-made gt lacks them
    gt_dict["annotations"] = [
        a if "area" in a and "iscrowd" in a else {**a, "area": a.get("area", a["bbox"][2] * a["bbox"][3]),
                                                  "iscrowd": a.get("iscrowd", 0)}
        for a in gt_dict["annotations"]
    ]

    dt_input = [dict(r) for r in results]  # loadRes adds keys; a shallow copy per result suffices
    if iou_type == "segm":
        # With a 'bbox' key the COCO API takes the box area as the detection's area; mask AP's
        # small/medium/large ranges are meant to use the mask area (as Detectron2 also does).
        for r in dt_input:
            r.pop("bbox", None)
            if "segmentation" not in r:
                raise ValueError("iou_type='segm' needs a 'segmentation' in every result")
    coco_gt = COCO(gt_dict)
    coco_dt = coco_gt.loadRes(dt_input)
    ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=log.debug)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    stats = [float(v) for v in ev.stats[:12]]
    out: dict[str, Any] = dict(zip(METRIC_NAMES, stats))

    precision = np.asarray(ev.eval["precision"])  # (T, R, K, A, M)
    recall = np.asarray(ev.eval["recall"])  # (T, K, A, M)
    scores = np.asarray(ev.eval.get("scores", np.zeros_like(precision)))
    iou_thrs = np.asarray(ev.params.iouThrs)
    eval_cat_ids = list(ev.params.catIds)
    name_of = {c: n for c, n in zip(gt_cat_ids, class_names)}
    num_gt = {c: 0 for c in eval_cat_ids}
    for a in gt_dict["annotations"]:
        if not a.get("iscrowd", 0) and a["category_id"] in num_gt:
            num_gt[a["category_id"]] += 1

    def mean_valid(x):
        x = x[x > -1]
        return float(x.mean()) if x.size else float("nan")

    t50, t75 = int(np.argmin(np.abs(iou_thrs - 0.5))), int(np.argmin(np.abs(iou_thrs - 0.75)))
    per_class = []
    for k, c in enumerate(eval_cat_ids):
        p = precision[:, :, k, 0, -1]
        per_class.append({
            "name": name_of.get(c, str(c)),
            "cat_id": int(c),
            "AP": mean_valid(p),
            "AP50": mean_valid(p[t50]),
            "AP75": mean_valid(p[t75]),
            "num_gt": num_gt[c],
        })
    out.update(
        per_class=per_class,
        class_names=[name_of.get(c, str(c)) for c in eval_cat_ids],
        cat_ids=[int(c) for c in eval_cat_ids],
        precision=precision,
        recall=recall,
        scores=scores,
        iou_thrs=iou_thrs,
        rec_thrs=np.asarray(ev.params.recThrs),
        iou_type=iou_type,
        num_images=len(gt_dict["images"]),
        num_detections=len(results),
    )
    return out


def format_table(results: Mapping[str, Any], per_class: bool = True, digits: int = 3) -> str:
    """A readable summary of `evaluate_coco` output: the 12 numbers and a per-class AP table."""
    lines = [f"COCO {results.get('iou_type', 'bbox')} metrics "
             f"({results.get('num_images', '?')} images, {results.get('num_detections', '?')} detections)"]
    names = [n for n in METRIC_NAMES if n in results]
    lines.append("  ".join(f"{n:>6s}" for n in names))
    lines.append("  ".join(f"{results[n]:6.{digits}f}" for n in names))
    if per_class and results.get("per_class"):
        rows = results["per_class"]
        w = max(5, *(len(r["name"]) for r in rows))
        lines.append("")
        lines.append(f"{'class':<{w}s}  {'id':>4s}  {'num_gt':>6s}  {'AP':>6s}  {'AP50':>6s}  {'AP75':>6s}")
        lines.append("-" * (w + 38))

        def f(v):
            return f"{v:6.{digits}f}" if v == v else f"{'-':>6s}"

        for r in rows:
            lines.append(f"{r['name']:<{w}s}  {r['cat_id']:>4d}  {r['num_gt']:>6d}  {f(r['AP'])}  {f(r['AP50'])}  {f(r['AP75'])}")
    return "\n".join(lines)


def save_coco_json(results, path: str | os.PathLike, cat_ids: list[int] | None = None) -> Path:
    """Write detections as a COCO results json (per-image results are converted with ``cat_ids``)."""
    from ..atomic import write_json
    coco = to_coco_results(results, cat_ids, "segm" if _has_segm(results) else "bbox")
    return write_json(path, coco)


def _has_segm(results) -> bool:
    if isinstance(results, Mapping):
        results = list(results.values())
    for r in results:
        return _get(r, "masks") is not None or _get(r, "segmentations") is not None
    return False


def confusion_matrix(
    dataset: DetectionDataset, detections, iou_thr: float = 0.5, score_thr: float = 0.25
) -> np.ndarray:
    """(C+1, C+1) counts; rows = predicted class, columns = true class, last index = background.

    Per image, detections above ``score_thr`` are matched greedily (highest IoU first, one-to-one,
    class-agnostic) to non-crowd ground truth with IoU >= ``iou_thr``. Unmatched detections count
    as (pred, background), unmatched ground truth as (background, true).
    """
    C = dataset.num_classes
    m = np.zeros((C + 1, C + 1), np.int64)
    by_img: dict[int, Any] = {}
    if isinstance(detections, Mapping):
        by_img = {int(k): v for k, v in detections.items()}
    else:
        for d in detections:
            by_img[int(_get(d, "image_id"))] = d
    for r in dataset.records:
        keep = ~r.iscrowd.astype(bool) if len(r.iscrowd) else np.ones(len(r.boxes), bool)
        gb, gl = _np(r.boxes).reshape(-1, 4)[keep], _np(r.labels).reshape(-1)[keep]
        d = by_img.get(int(r.image_id))
        if d is None:
            db, dl = np.zeros((0, 4)), np.zeros(0, np.int64)
        else:
            ds = _np(_get(d, "scores")).reshape(-1)
            sel = ds >= score_thr
            db = _np(_get(d, "boxes")).reshape(-1, 4)[sel]
            dl = _np(_get(d, "labels")).reshape(-1).astype(np.int64)[sel]
        matched_g, matched_d = set(), set()
        if len(gb) and len(db):
            iou = box_iou(torch.from_numpy(db.astype(np.float64)),
                          torch.from_numpy(gb.astype(np.float64)), eps=1e-12).numpy()
            di, gi = np.nonzero(iou >= iou_thr)
            order = np.argsort(-iou[di, gi], kind="stable")
            for i, j in zip(di[order], gi[order]):
                if i in matched_d or j in matched_g:
                    continue
                matched_d.add(i)
                matched_g.add(j)
                m[dl[i], gl[j]] += 1
        for i in range(len(db)):
            if i not in matched_d:
                m[dl[i], C] += 1
        for j in range(len(gb)):
            if j not in matched_g:
                m[C, gl[j]] += 1
    return m
