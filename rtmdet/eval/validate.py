"""Run a model over a dataset and score it with COCO metrics (used by `rtmdet val` and training)."""
from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from ..data.records import DetectionDataset
from .coco import evaluate_coco

log = logging.getLogger("rtmdet")


def predict_dataset(model, dataset: DetectionDataset, batch_size: int = 8, progress: bool = True,
                    **knobs) -> list[dict]:
    """Per-image results dicts (image_id, boxes, scores, labels[, segmentations]) for every
    record; masks are RLE-encoded batch by batch (full-resolution masks of a whole dataset would
    not fit in memory). An unreadable image is logged and scored as having no detections."""
    from ..models.detector import ImageReadError, read_image

    results = []
    recs = dataset.records
    bar = tqdm(total=len(recs), desc="val", unit="img", disable=not progress)
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        imgs, ok = [], []
        for r in chunk:
            try:
                imgs.append(read_image(dataset.image_path(r)))
                ok.append(r)
            except ImageReadError as e:
                log.warning("skipped %s", e)
                empty = {"image_id": r.image_id, "boxes": np.zeros((0, 4)),
                         "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}
                if getattr(model.cfg, "with_mask", False):
                    empty["segmentations"] = []
                results.append(empty)
        if imgs:
            for r, d in zip(ok, model.predict(imgs, batch_size=batch_size, **knobs)):
                n = d.numpy()
                item = {"image_id": r.image_id, "boxes": n.boxes, "scores": n.scores, "labels": n.labels}
                if n.masks is not None:
                    item["segmentations"] = d.masks_rle()
                results.append(item)
        bar.update(len(chunk))
    bar.close()
    return results


def evaluate_model(model, dataset: DetectionDataset, batch_size: int = 8, progress: bool = True,
                   **knobs) -> tuple[dict, list[dict]]:
    """COCO bbox metrics (and segm for mask models) of `model` on `dataset`."""
    if model.cfg.num_classes != dataset.num_classes:
        raise ValueError(f"model predicts {model.cfg.num_classes} classes but the dataset has "
                         f"{dataset.num_classes}")
    dets = predict_dataset(model, dataset, batch_size, progress, **knobs)
    metrics = evaluate_coco(dataset, dets, "bbox")
    if getattr(model.cfg, "with_mask", False):
        metrics["segm"] = evaluate_coco(dataset, dets, "segm")
    return metrics, dets
