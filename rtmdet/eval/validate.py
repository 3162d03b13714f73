"""Run a model (any backend) over a dataset and score it (used by `rtmdet val` and training)."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..atomic import ensure_dir
from ..data.images import read_each
from ..data.records import DetectionDataset, check_decoded_size
from ..inference.loop import check_knobs
from ..inference.prefetch import on_accelerator, ordered_map

log = logging.getLogger("rtmdet")


@dataclass
class Evaluation:
    """A model scored on a dataset (`rtmdet.evaluate`, `rtmdet val`): the family's metrics by kind
    (`metrics["bbox"]["AP"]`, `metrics["segm"]` for RTMDet-Ins, `metrics["rbox"]["AP50"]` for RTMDet-R; each with
    its per-class table), the per-image result records they came from, and the dataset."""
    metrics: dict
    records: list[dict] = field(repr=False)
    dataset: DetectionDataset = field(repr=False)
    family: object = field(repr=False)

    @property
    def summary(self) -> dict[str, float]:
        """The headline numbers (what training logs per epoch), e.g. {"AP": .., "AP50": .., "AP75": ..}."""
        return self.family.summary(self.metrics)

    def table(self) -> str:
        """What `rtmdet val` prints: the metrics and the per-class table."""
        return self.family.format_metrics(self.metrics, self.dataset.class_names)

    def save_json(self, save_dir) -> Path:
        """The detections as a results file (COCO json; rotated: polygons and rotated boxes)."""
        return self.family.save_results(self.dataset, self.records, ensure_dir(save_dir))

    def save_plots(self, save_dir) -> list:
        """PR curves and the confusion matrix as PNGs in `save_dir` (COCO-style models; [] otherwise)."""
        return self.family.save_plots(self.metrics, self.dataset, self.records, ensure_dir(save_dir))

    def __str__(self) -> str:
        return self.table()


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
    chunks = [recs[start:start + batch_size] for start in range(0, len(recs), batch_size)]

    def read(chunk):  # host work only: on a GPU the next batch is read while this one runs
        return read_each([dataset.image_path(r) for r in chunk])

    ahead = 1 if on_accelerator(model) and len(chunks) > 1 else 0
    bar = tqdm(total=len(recs), desc="val", unit="img", disable=not progress)
    with bar, contextlib.closing(ordered_map(read, chunks, ahead=ahead)) as reads:
        for chunk, read_back in zip(chunks, reads):
            imgs, ok = [], []
            for r, (img, err) in zip(chunk, read_back):
                if err is not None:
                    log.warning("skipped %s", err)
                    results.append(family.empty_record(r.image_id))
                    continue
                check_decoded_size(r, img.shape, dataset.image_path(r))
                imgs.append(img)
                ok.append(r)
            if imgs:
                for r, d in zip(ok, model.predict(imgs, batch_size=batch_size, **knobs)):
                    results.append(family.result_record(r.image_id, d))
            bar.update(len(chunk))
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
