"""The one inference loop: read -> letterbox -> backend infer -> family post-processing ->
`Detections`. `RTMDet.predict`, `Detector.predict`, `rtmdet predict/val/bench` all run it."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import TestConfig
from ..data.images import is_single_image, read_image
from ..data.letterbox import letterbox_batch
from ..detections import Detections
from ..host_pool import host_map
from .prefetch import ordered_map


def check_knobs(**knobs) -> dict:
    """Validate test-time knobs where they enter (a bad value is a ValueError naming it)."""
    checks = {
        "score_thr": lambda v: 0 <= v <= 1, "nms_iou": lambda v: 0 <= v <= 1,
        "mask_thr": lambda v: 0 <= v <= 1, "max_per_img": lambda v: v >= 1,
        "nms_pre": lambda v: v >= 1 or v == -1, "batch_size": lambda v: v >= 1,
        "imgsz": lambda v: v >= 32 and v % 32 == 0,
    }
    rules = {"score_thr": "between 0 and 1", "nms_iou": "between 0 and 1",
             "mask_thr": "between 0 and 1", "max_per_img": ">= 1", "nms_pre": ">= 1 (or -1: all)",
             "batch_size": ">= 1", "imgsz": "a positive multiple of 32"}
    for k, v in knobs.items():
        if v is None or k not in checks:
            continue
        sizes = v if k == "imgsz" and isinstance(v, (tuple, list)) else [v]
        for x in sizes:
            integral = k in ("max_per_img", "nms_pre", "batch_size", "imgsz")
            bad_type = (integral and (isinstance(x, bool) or not float(x).is_integer())) or \
                not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x)
            if bad_type or not checks[k](x):
                raise ValueError(f"{k}={v!r}: must be {rules[k]}")
    return knobs


def resolve_test_cfg(base: TestConfig, **overrides) -> TestConfig:
    """`base` with the knobs that are given (not None), validated."""
    given = {k: v for k, v in check_knobs(**overrides).items() if v is not None}
    return dataclasses.replace(base, **given)


def input_size(imgsz) -> tuple[int, int]:
    return (imgsz, imgsz) if isinstance(imgsz, int) else tuple(int(v) for v in imgsz)


def run_batch(backend, images: list[np.ndarray], cfg: TestConfig) -> list[Detections]:
    """Decoded BGR images -> their detections through `backend` (one batch)."""
    x, metas = backend.preprocess(images, backend.input_size(cfg.imgsz))
    # no wait for the network: the post-processing's first kernels queue behind it on the same
    # stream, and its first read of a result waits
    return backend.postprocess(backend.infer_async(x), metas, cfg)


def run_inference(backend, images, batch_size: int = 8, tile: int | None = None,
                  overlap: int = 200, prefetch: bool | None = None, classes=None, tta: bool = False,
                  side_stream: bool = False, **knobs) -> list[Detections] | Detections:
    """Detect in a path, array, PIL image, or a list of them, batch by batch.

    Returns one `Detections` per image (a single one for a single input). Unset knobs
    (score_thr, nms_iou, max_per_img, nms_pre, imgsz, mask_thr) come from `backend.test_cfg`.
    `tile`: predict each image in `tile` x `tile` windows overlapping by `overlap` px, merged with
    the family's NMS (`rtmdet.inference.tiling`; the knobs apply per patch and to the merge).
    `prefetch`: read and letterbox the next batch on a worker thread while this one runs
    (`rtmdet.inference.prefetch`; same results). Default: when the network runs on a GPU; on a
    CPU the worker would take cores from the network (benchmarks/bench_pipeline.py).
    `side_stream`: with reading ahead and a CUDA PyTorch model, post-process each batch on a
    second CUDA stream while the next batch's network runs (`SideStream`; same results). Off by
    default: on an H100 it paid for some sizes and cost for others (docs/speed.md).
    `classes`: detect only these classes (indices or names; `rtmdet.inference.classes`).
    `tta`: the reference's test-time augmentation (3 scales x flip, merged; detection models;
    `rtmdet.inference.tta`)."""
    check_knobs(batch_size=batch_size)
    if classes is not None:
        from .classes import OnlyClasses, class_indices
        backend = OnlyClasses(backend, class_indices(classes, backend.class_names))
    single = is_single_image(images)
    items = [images] if single else list(images)
    cfg = resolve_test_cfg(backend.test_cfg, **knobs)
    if tile is not None:
        from .tiling import check_tiling, run_tiled
        tile, overlap = check_tiling(tile, overlap)
    if tta:
        from .tta import check_tta, run_tta
        if tile is not None:
            raise ValueError("tta and tile do not combine: choose one")
        check_tta(backend, cfg.imgsz)
    if backend.fixed_batch:
        batch_size = min(batch_size, backend.fixed_batch)
    chunks = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]

    def prepare(chunk):  # on the worker thread when reading ahead: host work only
        files = any(not isinstance(x, np.ndarray) for x in chunk)  # decoded side by side
        arrays = host_map(read_image, chunk) if files else [read_image(x) for x in chunk]
        if tile is not None or tta:
            return arrays, None
        return arrays, backend.preprocess_host(arrays, backend.input_size(cfg.imgsz))

    if prefetch is None:
        prefetch = backend.accelerated
    ready = ordered_map(prepare, chunks, ahead=1 if prefetch and len(chunks) > 1 else 0)
    side = None
    device = getattr(backend, "overlap_device", None)
    if side_stream and prefetch and tile is None and not tta and len(chunks) > 1 and device is not None:
        side = SideStream(device)
    results: list[Detections] = []

    def emit(chunk, dets):
        for d, src in zip(dets, chunk):
            d.source = str(src) if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__") else None
        results.extend(dets)

    pending = None  # with `side`: the batch whose network is queued, post-processing to come
    for chunk, (arrays, pre) in zip(chunks, ready):
        if tta:
            emit(chunk, run_tta(backend, arrays, cfg, batch_size))
        elif tile is not None:
            emit(chunk, run_tiled(backend, arrays, cfg, tile, overlap, batch_size))
        else:
            x, metas = backend.preprocess_device(pre)
            if side is None:
                emit(chunk, backend.postprocess(backend.infer_async(x), metas, cfg))
                continue
            # queue this batch's network, then post-process the previous batch beside it
            queued = (chunk, backend.infer_async(x), metas, side.mark())
            if pending is not None:
                emit(pending[0], side.run(backend, *pending[1:], cfg))
            pending = queued
    if pending is not None:
        emit(pending[0], side.run(backend, *pending[1:], cfg))
    return results[0] if single else results


class SideStream:
    """Post-processing on a second CUDA stream. `run_inference` queues batch i+1's network on the
    main stream first, then post-processes batch i here: its kernels run beside that network and
    its host reads wait for this stream only, so the GPU is not idle while the host drives the
    NMS. Ordering: this stream waits for the event recorded after batch i's network (`mark`),
    the main stream for everything queued here; `record_stream` keeps each tensor's memory from
    being reused while the other stream may still read it."""

    def __init__(self, device):
        import torch
        self.main = torch.cuda.current_stream(device)
        self.side = torch.cuda.Stream(device)

    def mark(self):
        return self.main.record_event()

    def run(self, backend, outs, metas, mark, cfg) -> list[Detections]:
        import torch
        from .speed import each_tensor
        with torch.cuda.stream(self.side):
            self.side.wait_event(mark)
            each_tensor(lambda t: t.record_stream(self.side) if t.is_cuda else None, outs)
            dets = backend.postprocess(outs, metas, cfg)
        self.main.wait_stream(self.side)
        each_tensor(lambda t: t.record_stream(self.main) if t.is_cuda else None, dets)
        return dets


def letterbox_input(images: list[np.ndarray], size: tuple[int, int], fixed_batch: int | None = None):
    """(B,3,H,W) uint8 letterboxed batch and metas; a static-batch graph gets copies of the last
    image appended up to its batch size (their results are dropped)."""
    arr, metas = letterbox_batch(images, size)
    if fixed_batch and len(images) != fixed_batch:
        if len(images) > fixed_batch:
            raise ValueError(f"batch of {len(images)} > the graph's static batch {fixed_batch}")
        arr = np.concatenate([arr] + [arr[-1:]] * (fixed_batch - len(images)))
    return arr, metas
