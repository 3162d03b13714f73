"""Time COCO bbox evaluation: rtmdet.eval (faster-coco-eval) vs pycocotools, same data, same run.

    python3 benchmarks/bench_eval.py --images 5000 --dets 100

Prints both wall times, the ratio, and the largest difference between the 12 metrics.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtmdet.eval.coco import METRIC_NAMES, evaluate_coco  # noqa: E402


def make_data(n_images: int, n_dets: int, n_classes: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    cat_ids = list(range(1, n_classes + 1))
    images, anns, dets = [], [], []
    for i in range(n_images):
        W, H = 640, 480
        images.append({"id": i + 1, "width": W, "height": H, "file_name": f"{i + 1}.jpg"})
        n_gt = int(rng.integers(0, 15))
        wh = np.exp(rng.uniform(np.log(6), np.log(400), (n_gt, 2)))
        xy = rng.uniform(0, 1, (n_gt, 2)) * ([W, H] - wh).clip(1)
        cls = rng.integers(0, n_classes, n_gt)
        for k in range(n_gt):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat_ids[cls[k]],
                         "bbox": [*xy[k].tolist(), *wh[k].tolist()], "area": float(wh[k].prod()), "iscrowd": 0})
        # detections: noisy copies of the gt, then random boxes, n_dets in all
        n_hit = min(n_gt, n_dets)
        jit = rng.normal(0, 0.1, (n_hit, 4)) * np.tile(wh[:n_hit], 2)
        hit = np.concatenate([xy[:n_hit], xy[:n_hit] + wh[:n_hit]], 1) + jit
        m = n_dets - n_hit
        rwh = rng.uniform(5, 300, (m, 2))
        rxy = rng.uniform(0, 1, (m, 2)) * ([W, H] - rwh).clip(1)
        boxes = np.concatenate([hit, np.concatenate([rxy, rxy + rwh], 1)])
        labels = np.concatenate([cls[:n_hit], rng.integers(0, n_classes, m)])
        dets.append({"image_id": i + 1, "boxes": boxes, "scores": rng.random(n_dets), "labels": labels})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return gt, dets


def run_pycocotools(gt, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        ev = COCOeval(g, g.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.array(ev.stats[:12])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--skip-pycocotools", action="store_true")
    a = ap.parse_args()

    gt, dets = make_data(a.images, a.dets, a.classes)
    print(f"{a.images} images, {len(gt['annotations'])} gt boxes, {a.images * a.dets} detections, {a.classes} classes")

    t = time.perf_counter()
    ours = evaluate_coco(gt, dets)
    t_fast = time.perf_counter() - t
    print(f"rtmdet.eval (faster-coco-eval): {t_fast:8.2f} s  (conversion + evaluate + accumulate + summarize)")
    if a.skip_pycocotools:
        return
    # pycocotools gets the same COCO results list; converting is not timed for it (favours it slightly)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    results = [{"image_id": d["image_id"], "category_id": cat_ids[int(l)],
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)}
               for d in dets for b, s, l in zip(d["boxes"].tolist(), d["scores"], d["labels"])]
    t = time.perf_counter()
    ref = run_pycocotools(gt, results)
    t_ref = time.perf_counter() - t
    print(f"pycocotools                   : {t_ref:8.2f} s")
    print(f"speed-up: {t_ref / t_fast:.1f}x")
    diff = np.abs(np.array([ours[k] for k in METRIC_NAMES]) - ref).max()
    print(f"AP {ours['AP']:.4f} vs {ref[0]:.4f}; max |difference| over the 12 metrics: {diff:.2e}")


if __name__ == "__main__":
    main()
