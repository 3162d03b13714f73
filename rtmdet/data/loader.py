"""Training dataset wrapper, collate and loader construction.

* :class:`TrainDataset` loads an image with ``cv2.imread`` (BGR, EXIF orientation applied, as
  mmcv's ``LoadImageFromFile``), builds a :class:`~rtmdet.data.transforms.Sample` from the
  record (iscrowd -> ignore flags; the per-instance targets asked for, e.g. ``"masks"``: polygon
  masks as the reference moves them, see :mod:`rtmdet.data.target_loaders`), runs the
  current stage's pipeline and returns (3, H, W) uint8 tensors (BGR, a view of the HWC pixels,
  *not* normalised: the model's ``normalize`` converts to float on the device, with mean
  (103.53, 116.28, 123.675), std (57.375, 57.12, 58.395)).
* An **unreadable image raises** ``FileNotFoundError`` naming the file: silently skipping would
  hide a broken dataset and make runs depend on which files happen to be missing.
* A pipeline that returns ``None`` (RandomCrop left no box, FilterAnnotations emptied the
  sample) makes the dataset fetch another random index, up to ``max_refetch`` times, like
  mmengine's ``BaseDataset``.
* Randomness: every worker owns a ``numpy.random.Generator`` seeded from
  ``(seed, epoch, worker_id)``; the Mosaic/MixUp caches live in the worker's copy of the pipeline
  (as in the reference). With the same seed, ``num_workers``, batch size and epoch the samples are
  identical run to run (the sampler is seeded by :func:`build_train_loader` as well).
* ``set_stage(2)`` switches to the stage-2 pipeline of ``ds[i]``. A loader from
  :func:`build_train_loader` does not depend on it: its :class:`EpochSampler` sends
  ``(epoch, stage, index)`` keys, and a worker that sees a new (epoch, stage) starts a fresh copy
  of that stage's pipeline (empty Mosaic/MixUp caches) and re-seeds its generator. So one loader
  with ``persistent_workers=True`` serves every epoch of both stages (``sampler.set_epoch(epoch,
  stage)`` before iterating), and each epoch still draws exactly what a fresh loader would: a
  resumed run replays an epoch bit for bit.
"""
from __future__ import annotations

import copy
import functools
import os
import time
from typing import Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .records import DetectionDataset, check_decoded_size
from .target_loaders import TARGET_LOADERS, TargetLoader, resolve_loader
from .targets import decode_rle, record_masks
from .transforms import PipelineParams, Sample, build_train_pipeline

__all__ = ["TrainDataset", "EpochSampler", "collate", "build_train_loader", "loader_images_per_s",
           "worker_init", "load_image", "record_masks", "decode_rle"]

PROBE_EPOCH = -1  # the epoch key of speed-probe draws (their own pipeline copies and generator)


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
            names of `rtmdet.data.target_loaders.TARGET_LOADERS` (``("masks",)``: the
            segmentations as polygon masks, or bitmaps for a dataset with RLE masks;
            ``("rboxes",)``: rotated boxes from the polygons), or a mapping name -> loader
            ``(record, img_h, img_w) -> Target`` (e.g. ``{"masks": MaskTarget.from_record}`` for
            bitmaps whatever the dataset; a loader with ``ignored(record)`` marks instances
            it cannot load as ignored).
        target_steps: name -> step for targets returned on a coarser grid (``as_array(step)``:
            the pixels at the centres of step-pixel cells), e.g. ``{"masks": 4}``: what the
            RTMDet-Ins loss reads (`TaskFamily.target_steps`), 1/16 of the bytes to collate,
            pin and copy to the device.
        filter_empty_gt / min_size: drop images without annotations or with min(w, h) < min_size,
            as the reference CocoDataset ``filter_cfg=dict(filter_empty_gt=True, min_size=32)``.
        max_refetch: how many other indices to try when the pipeline drops a sample.
    """

    def __init__(self, dataset: DetectionDataset, pipeline: Callable | None = None,
                 pipeline_stage2: Callable | None = None, *, model_size: str | PipelineParams = "s",
                 img_scale: int = 640,
                 stage: int = 1, seed: int = 0, targets: Sequence[str] | Mapping[str, TargetLoader] = (),
                 target_steps: Mapping[str, int] | None = None,
                 filter_empty_gt: bool = True, min_size: int = 32, max_refetch: int = 1000):
        self.dataset = dataset
        # the reference's filter_cfg; what it leaves out is counted so a run can say so
        self.records, no_boxes, small = [], 0, 0
        for r in dataset.records:
            if filter_empty_gt and not len(r.boxes):
                no_boxes += 1
            elif min(r.width, r.height) < min_size:
                small += 1
            else:
                self.records.append(r)
        self.left_out = {"without boxes": no_boxes, f"under {min_size} px": small}
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
        self.target_loaders = {name: resolve_loader(load, self.records) for name, load in self.target_loaders.items()}
        self.target_steps = dict(target_steps or {})
        bad = {k: v for k, v in self.target_steps.items() if k not in self.target_loaders or int(v) < 1}
        if bad:
            raise ValueError(f"target_steps {bad}: each name must be a loaded target, each step >= 1")
        self.max_refetch = max_refetch
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple | None = None
        self._keyed: tuple | None = None  # (epoch, stage, worker) of _keyed_pipeline / _keyed_rng
        self._cache: list[np.ndarray] | None = None  # decoded images (`cache_images`)

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

    def _generator(self, epoch: int, worker: int) -> np.random.Generator:
        e = epoch if epoch >= 0 else 2**32 + epoch  # the probe's key, apart from every epoch
        return np.random.default_rng(np.random.SeedSequence([self.seed, e, worker + 1]))

    def rng(self) -> np.random.Generator:
        info = get_worker_info()
        key = (self.seed, self.epoch, info.id if info is not None else -1)
        if self._rng is None or self._rng_key != key:
            self._rng = self._generator(key[1], key[2])
            self._rng_key = key
        return self._rng

    def _keyed_state(self, epoch: int, stage: int) -> tuple[Callable, np.random.Generator]:
        """The pipeline and generator of an ``(epoch, stage, index)`` key: on the first key of
        a new (epoch, stage) in this process a fresh copy of ``pipelines[stage]`` (empty caches)
        and a generator seeded from (seed, epoch, worker), as a fresh worker would have."""
        info = get_worker_info()
        key = (epoch, stage, info.id if info is not None else -1)
        if self._keyed != key:
            self._keyed_pipeline = copy.deepcopy(self.pipelines[stage])
            self._keyed_rng = self._generator(epoch, key[2])
            self._keyed = key
        return self._keyed_pipeline, self._keyed_rng

    # -- data
    def __len__(self) -> int:
        return len(self.records)

    def cache_bytes(self) -> int:
        """What `cache_images` would hold: every image decoded (h x w x 3 bytes)."""
        return sum(int(r.width) * int(r.height) * 3 for r in self.records)

    def cache_images(self, threads: int | None = None, progress: bool = True) -> int:
        """Decode every image once into memory, the pixels `load_image` gives (so training is
        bit-identical with and without), on `threads` threads (OpenCV decodes without the GIL);
        loader workers forked afterwards share the pages. Each sample then copies its image
        (the pipeline may write into it) instead of decoding it. Returns the bytes held."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm
        paths = [self.dataset.image_path(r) for r in self.records]
        with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
            images = list(tqdm(pool.map(load_image, paths), total=len(paths), desc="caching images",
                               unit="img", disable=not progress))
        self._cache = images
        return sum(img.nbytes for img in images)

    def load_sample(self, index: int) -> Sample:
        rec = self.records[index]
        path = self.dataset.image_path(rec)
        img = self._cache[index].copy() if self._cache is not None else load_image(path)
        check_decoded_size(rec, img.shape, path)
        ignore = rec.iscrowd.copy() if len(rec.iscrowd) == len(rec.boxes) else np.zeros(len(rec.boxes), bool)
        targets = {}
        for name, load in self.target_loaders.items():
            targets[name] = load(rec, *img.shape[:2])
            if hasattr(load, "ignored"):
                ignore |= load.ignored(rec)
        return Sample(img, rec.boxes.copy(), rec.labels.copy(), ignore, targets,
                      {"image_id": rec.image_id, "path": rec.path})

    def __getitem__(self, index: int | tuple[int, int, int]) -> dict:
        """``ds[i]``: the current stage and epoch (`set_stage`, `set_epoch`); ``ds[epoch, stage,
        i]`` (what `EpochSampler` sends): that epoch and stage, whatever the dataset was set to."""
        if isinstance(index, tuple):
            epoch, stage, index = index
            pipeline, rng = self._keyed_state(int(epoch), int(stage))
        else:
            pipeline, rng = self.pipeline, self.rng()
        for _ in range(self.max_refetch + 1):
            out = pipeline(self.load_sample(index), rng)
            if out is not None:
                return self.to_tensors(out)
            index = int(rng.integers(0, len(self)))
        raise RuntimeError(f"pipeline dropped {self.max_refetch + 1} samples in a row; check the dataset")

    def to_tensors(self, s: Sample) -> dict:
        # uint8 and no copy: a (3, H, W) view of the HWC pixels. The float conversion and the
        # CHW layout happen on the training device (`collate` stacks in HWC order), so workers,
        # shared memory, pinning and the host-to-device copy move a quarter of the bytes
        img = torch.from_numpy(np.ascontiguousarray(s.img)).permute(2, 0, 1)
        keep = ~s.ignore
        out = {
            "img": img,
            "boxes": torch.from_numpy(s.boxes[keep].astype(np.float32)),
            "labels": torch.from_numpy(s.labels[keep].astype(np.int64)),
            "ignored_boxes": torch.from_numpy(s.boxes[~keep].astype(np.float32)),
            "image_id": s.meta.get("image_id", -1),
        }
        for name, t in s.targets.items():
            step, kept = self.target_steps.get(name, 1), t.select(keep)
            out[name] = torch.from_numpy(kept.as_array(step) if step > 1 else kept.as_array())
        return out


_ITEM_KEYS = {"img", "boxes", "labels", "ignored_boxes", "image_id"}  # what every item has


def collate(batch: list[dict]) -> dict:
    """Stack images (B, 3, H, W) uint8; keep per-image boxes / labels / ignored boxes and the
    targets (``masks``, ...) that every item has as lists.

    The images are stacked as (B, H, W, 3), the order `TrainDataset` items have in memory (one
    copy), and returned as a channels-last view (B, 3, H, W): call ``.contiguous()`` (the trainer
    does it on the device) where a contiguous NCHW tensor is needed."""
    out = {
        "imgs": torch.stack([b["img"].permute(1, 2, 0) for b in batch]).permute(0, 3, 1, 2),
        "boxes": [b["boxes"] for b in batch],
        "labels": [b["labels"] for b in batch],
        "ignored_boxes": [b["ignored_boxes"] for b in batch],
        "image_ids": [b["image_id"] for b in batch],
    }
    for name in batch[0]:
        if name not in _ITEM_KEYS and all(name in b for b in batch):
            out[name] = [b[name] for b in batch]
    return out


class EpochSampler(Sampler):
    """Yields ``(epoch, stage, index)`` keys for `TrainDataset`, so one DataLoader (persistent
    workers) serves every epoch: call ``set_epoch(epoch, stage)`` before iterating.

    The order is the one a fresh ``DataLoader(shuffle=True, generator=g)`` with
    ``g.manual_seed(seed * 1000003 + epoch)`` draws (that loader takes one number from ``g``
    for its workers' base seed first, then the permutation), so it does not change with the
    loader's life; ``base`` (e.g. a DistributedSampler) gives the order instead.
    ``probe(count, stage)``: the next iteration yields ``count`` keys of `PROBE_EPOCH`
    (a speed measurement that leaves every real epoch's draws untouched)."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, base=None):
        self.size, self.seed, self.shuffle, self.base = int(size), int(seed), shuffle, base
        self.epoch, self.stage, self._probe = 0, 1, None

    def set_epoch(self, epoch: int, stage: int = 1) -> None:
        self.epoch, self.stage, self._probe = int(epoch), int(stage), None
        if self.base is not None and hasattr(self.base, "set_epoch"):
            self.base.set_epoch(self.epoch)

    def probe(self, count: int, stage: int = 1) -> None:
        self.stage, self._probe = int(stage), int(count)

    def order(self) -> list[int]:
        if self._probe is not None:  # a fixed permutation, cycled to `count` keys
            perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()
            return [perm[i % self.size] for i in range(self._probe)]
        if self.base is not None:
            return list(self.base)
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator()
        g.manual_seed(self.seed * 1000003 + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the loader's base-seed draw
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = PROBE_EPOCH if self._probe is not None else self.epoch
        return iter([(epoch, self.stage, i) for i in self.order()])

    def __len__(self) -> int:
        if self._probe is not None:
            return self._probe
        return len(self.base) if self.base is not None else self.size


def worker_init(worker_id: int, opencv_threads: int = 0) -> None:
    """Run each loader worker's OpenCV calls on the worker's own thread (``cv2.setNumThreads(0)``,
    what mmengine's ``opencv_num_threads=0`` does): otherwise every resize and colour conversion
    of every worker fans out to one thread per core, W workers x C cores threads on C cores.
    The pixels do not depend on it (OpenCV splits rows between threads)."""
    cv2.setNumThreads(opencv_threads)


def build_train_loader(dataset: TrainDataset, batch_size: int, *, num_workers: int = 0, shuffle: bool = True,
                       seed: int | None = None, epoch: int = 0, drop_last: bool = False,
                       pin_memory: bool = False, sampler=None, persistent_workers: bool = False,
                       prefetch_factor: int | None = None, opencv_threads: int | None = 0) -> DataLoader:
    """A DataLoader over `EpochSampler` keys (seeded order, seed + epoch), set to ``epoch`` and
    the dataset's current stage. Keep it for the next epochs (``loader.sampler.set_epoch(e,
    stage)``; ``persistent_workers`` then keeps the worker processes) or build one per epoch:
    both draw the same. ``sampler`` (e.g. a DistributedSampler) gives the order instead.
    ``opencv_threads``: OpenCV threads per worker process (`worker_init`; None leaves OpenCV's
    default, one thread per core in every worker).
    """
    dataset.set_epoch(epoch)
    seed = dataset.seed if seed is None else seed
    keys = EpochSampler(len(dataset), seed, shuffle, base=sampler)
    keys.set_epoch(epoch, dataset.stage)
    g = torch.Generator()  # the workers' base seed (unused: every worker seeds its own generator)
    g.manual_seed(seed * 1000003 + epoch)
    extra = {"prefetch_factor": prefetch_factor} if num_workers and prefetch_factor else {}
    if num_workers and opencv_threads is not None:
        extra["worker_init_fn"] = functools.partial(worker_init, opencv_threads=int(opencv_threads))
    return DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=num_workers,
                      collate_fn=collate, drop_last=drop_last, pin_memory=pin_memory, generator=g,
                      persistent_workers=bool(persistent_workers and num_workers), **extra)


def loader_images_per_s(loader: DataLoader, batches: int, stage: int = 1) -> tuple[float, dict]:
    """Images/s of `loader` alone (drawn, not computed) over ``batches`` probe batches of
    ``stage``, and a batch of it. A first pass of one batch per worker starts the workers
    (persistent ones stay up) so the timed pass, from ``iter()`` on, measures the rate the
    pipelines deliver, not what the queues held. `batches` is rounded up to a multiple of the
    worker count: each worker builds whole batches, so with fewer batches than workers the
    timing would be one batch's latency, not the workers' combined rate. The real epochs'
    draws are untouched (`EpochSampler.probe`)."""
    keys = loader.sampler
    epoch, was = keys.epoch, keys.stage
    workers = max(1, loader.num_workers)
    batches = -(-max(1, batches) // workers) * workers
    try:
        keys.probe(workers * loader.batch_size, stage)
        first = list(loader)[0]
        keys.probe(batches * loader.batch_size, stage)
        t, n = time.perf_counter(), 0
        for b in loader:
            n += len(b["imgs"])
        return n / max(time.perf_counter() - t, 1e-9), first
    finally:
        keys.set_epoch(epoch, was)
