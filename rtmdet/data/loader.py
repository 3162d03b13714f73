"""Training dataset wrapper, collate and loader construction.

* :class:`TrainDataset` loads an image with ``cv2.imread`` (BGR, EXIF orientation applied, as
  mmcv's ``LoadImageFromFile``), builds a :class:`~rtmdet.data.transforms.Sample` from the
  record (iscrowd -> ignore flags; the per-instance targets asked for, e.g. ``"masks"``: bitmap
  masks from polygons / RLE, see :mod:`rtmdet.data.targets`), runs the
  current stage's pipeline and returns CHW float32 tensors (0..255, BGR, *not* normalised; the
  model's preprocessor normalises with mean (103.53, 116.28, 123.675), std (57.375, 57.12, 58.395)).
* An **unreadable image raises** ``FileNotFoundError`` naming the file: silently skipping would
  hide a broken dataset and make runs depend on which files happen to be missing.
* A pipeline that returns ``None`` (RandomCrop left no box, FilterAnnotations emptied the
  sample) makes the dataset fetch another random index, up to ``max_refetch`` times, like
  mmengine's ``BaseDataset``.
* Randomness: every worker owns a ``numpy.random.Generator`` seeded from
  ``(seed, epoch, worker_id)``; the Mosaic/MixUp caches live in the worker's copy of the pipeline
  (as in the reference). With the same seed, ``num_workers``, batch size and epoch the samples are
  identical run to run (the sampler is seeded by :func:`build_train_loader` as well).
* ``set_stage(2)`` switches to the stage-2 pipeline. DataLoader workers copy the dataset when an
  iterator is created, so call it before iterating the next epoch, and do not use
  ``persistent_workers=True`` across the switch (or rebuild the loader).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .records import DetectionDataset
from .targets import TARGET_LOADERS, TargetLoader, decode_rle, record_masks
from .transforms import PipelineParams, Sample, build_train_pipeline

__all__ = ["TrainDataset", "collate", "build_train_loader", "load_image", "record_masks", "decode_rle"]


def load_image(path: str) -> np.ndarray:
    """Read an image as HxWx3 uint8 BGR; raise FileNotFoundError naming the file if unreadable."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path!r} (missing, unreadable or not an image)")
    return img


class TrainDataset(Dataset):
    """A :class:`DetectionDataset` behind the two-stage RTMDet training pipeline.

    Args:
        dataset: the records.
        pipeline: stage-1 pipeline (callable ``(Sample, rng) -> Sample | None``); default
            ``build_train_pipeline(model_size, 1, img_scale)``.
        pipeline_stage2: stage-2 pipeline; default ``build_train_pipeline(model_size, 2, ...)``.
        model_size: the model whose reference pipelines are the defaults: 'tiny' ... 'x',
            'ins-tiny' ... 'ins-x', a model name ('rtmdet-ins-s'), or a PipelineParams.
        seed: base seed of the per-worker generators.
        targets: the per-instance targets to load with the boxes and return (under their names):
            names of `rtmdet.data.targets.TARGET_LOADERS` (``("masks",)``: bitmap masks from the
            segmentations; ``("rboxes",)``: rotated boxes from the polygons), or a mapping
            name -> loader ``(record, img_h, img_w) -> Target``.
        filter_empty_gt / min_size: drop images without annotations or with min(w, h) < min_size,
            as the reference CocoDataset ``filter_cfg=dict(filter_empty_gt=True, min_size=32)``.
        max_refetch: how many other indices to try when the pipeline drops a sample.
    """

    def __init__(self, dataset: DetectionDataset, pipeline: Callable | None = None,
                 pipeline_stage2: Callable | None = None, *, model_size: str | PipelineParams = "s",
                 img_scale: int = 640,
                 stage: int = 1, seed: int = 0, targets: Sequence[str] | Mapping[str, TargetLoader] = (),
                 filter_empty_gt: bool = True, min_size: int = 32, max_refetch: int = 1000):
        self.dataset = dataset
        self.records = [r for r in dataset.records
                        if (not filter_empty_gt or len(r.boxes) > 0) and min(r.width, r.height) >= min_size]
        if not self.records:
            raise ValueError("TrainDataset: no usable image left after filtering empty/small images")
        self.model_size = model_size
        self.pipelines = {
            1: pipeline if pipeline is not None else build_train_pipeline(model_size, 1, img_scale,
                                                                          dataset.class_names),
            2: pipeline_stage2 if pipeline_stage2 is not None else build_train_pipeline(model_size, 2, img_scale,
                                                                                        dataset.class_names),
        }
        self.stage = 0
        self.set_stage(stage)
        self.seed = int(seed)
        self.epoch = 0
        if isinstance(targets, Mapping):
            self.target_loaders = dict(targets)
        else:
            unknown = [t for t in targets if t not in TARGET_LOADERS]
            if unknown:
                raise KeyError(f"unknown targets {unknown}; known: {sorted(TARGET_LOADERS)}")
            self.target_loaders = {t: TARGET_LOADERS[t] for t in targets}
        self.max_refetch = max_refetch
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple | None = None

    # -- state switches
    def set_stage(self, stage: int) -> None:
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the per-worker generators for a new epoch (call before iterating it)."""
        self.epoch = int(epoch)

    @property
    def pipeline(self) -> Callable:
        return self.pipelines[self.stage]

    def rng(self) -> np.random.Generator:
        info = get_worker_info()
        key = (self.seed, self.epoch, info.id if info is not None else -1)
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng(np.random.SeedSequence([key[0], key[1], key[2] + 1]))
            self._rng_key = key
        return self._rng

    # -- data
    def __len__(self) -> int:
        return len(self.records)

    def load_sample(self, index: int) -> Sample:
        rec = self.records[index]
        img = load_image(self.dataset.image_path(rec))
        iscrowd = rec.iscrowd if len(rec.iscrowd) == len(rec.boxes) else np.zeros(len(rec.boxes), bool)
        targets = {name: load(rec, *img.shape[:2]) for name, load in self.target_loaders.items()}
        return Sample(img, rec.boxes.copy(), rec.labels.copy(), iscrowd.copy(), targets,
                      {"image_id": rec.image_id, "path": rec.path})

    def __getitem__(self, index: int) -> dict:
        rng = self.rng()
        for _ in range(self.max_refetch + 1):
            out = self.pipeline(self.load_sample(index), rng)
            if out is not None:
                return self.to_tensors(out)
            index = int(rng.integers(0, len(self)))
        raise RuntimeError(f"pipeline dropped {self.max_refetch + 1} samples in a row; check the dataset")

    @staticmethod
    def to_tensors(s: Sample) -> dict:
        img = torch.from_numpy(np.ascontiguousarray(s.img.transpose(2, 0, 1))).float()
        keep = ~s.ignore
        out = {
            "img": img,
            "boxes": torch.from_numpy(s.boxes[keep].astype(np.float32)),
            "labels": torch.from_numpy(s.labels[keep].astype(np.int64)),
            "ignored_boxes": torch.from_numpy(s.boxes[~keep].astype(np.float32)),
            "image_id": s.meta.get("image_id", -1),
        }
        for name, t in s.targets.items():
            out[name] = torch.from_numpy(t.select(keep).as_array())
        return out


_ITEM_KEYS = {"img", "boxes", "labels", "ignored_boxes", "image_id"}  # what every item has


def collate(batch: list[dict]) -> dict:
    """Stack images (B, 3, H, W); keep per-image boxes / labels / ignored boxes and the targets
    (``masks``, ...) that every item has as lists."""
    out = {
        "imgs": torch.stack([b["img"] for b in batch]),
        "boxes": [b["boxes"] for b in batch],
        "labels": [b["labels"] for b in batch],
        "ignored_boxes": [b["ignored_boxes"] for b in batch],
        "image_ids": [b["image_id"] for b in batch],
    }
    for name in batch[0]:
        if name not in _ITEM_KEYS and all(name in b for b in batch):
            out[name] = [b[name] for b in batch]
    return out


def build_train_loader(dataset: TrainDataset, batch_size: int, *, num_workers: int = 0, shuffle: bool = True,
                       seed: int | None = None, epoch: int = 0, drop_last: bool = False,
                       pin_memory: bool = False, sampler=None) -> DataLoader:
    """A DataLoader with a seeded shuffle order (seed + epoch) and the dataset's RNG set to ``epoch``.

    Build one per epoch (cheap) so both the order and the augmentation streams change with the
    epoch yet stay reproducible. Pass ``sampler`` (e.g. DistributedSampler) to override shuffling.
    """
    dataset.set_epoch(epoch)
    g = torch.Generator()
    g.manual_seed((dataset.seed if seed is None else seed) * 1000003 + epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                      sampler=sampler, num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                      pin_memory=pin_memory, generator=g, persistent_workers=False)
