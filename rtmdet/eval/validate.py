"""Run a model (any backend) over a dataset and score it (used by `rtmdet val` and training)."""
from __future__ import annotations

import logging

from tqdm import tqdm

from ..data.images import ImageReadError, read_image
from ..data.records import DetectionDataset
from ..inference.loop import check_knobs

log = logging.getLogger("rtmdet")


def predict_dataset(model, dataset: DetectionDataset, batch_size: int = 8, progress: bool = True,
                    **knobs) -> list[dict]:
    """Per-image result records (the family's `result_record`: image_id, boxes, scores, labels,
    and RLE masks for RTMDet-Ins) for every record. `model` is an `RTMDet` or a `Detector`.
    Masks are encoded batch by batch (full-resolution masks of a whole dataset would not fit in
    memory). An unreadable image is logged and scored as having no detections."""
    check_knobs(batch_size=batch_size, **knobs)  # before any work: a bad value is a ValueError
    family = model.family
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
                results.append(family.empty_record(r.image_id))
        if imgs:
            for r, d in zip(ok, model.predict(imgs, batch_size=batch_size, **knobs)):
                results.append(family.result_record(r.image_id, d))
        bar.update(len(chunk))
    bar.close()
    return results


def evaluate_model(model, dataset: DetectionDataset, batch_size: int = 8, progress: bool = True,
                   **knobs) -> tuple[dict, list[dict]]:
    """The family's metrics of `model` (an `RTMDet` or a `Detector`: exported graphs score the
    same way) on `dataset`: {"bbox": COCO results[, "segm": ...]}, and the per-image records."""
    num_classes = len(model.class_names)
    if num_classes != dataset.num_classes:
        raise ValueError(f"model predicts {num_classes} classes but the dataset has "
                         f"{dataset.num_classes}")
    dets = predict_dataset(model, dataset, batch_size, progress, **knobs)
    return model.family.evaluate(dataset, dets), dets
