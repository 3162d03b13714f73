"""Predicting a folder of image files: reading + letterboxing overlapped with the network
(`run_inference(prefetch=True)`, the default on GPUs) vs one after the other.

    python benchmarks/bench_pipeline.py [--model rtmdet-tiny] [--device cuda] [--images 64]
        [--batch 8] [--runs 3] [--score-thr 0.3] [--half] [--cuda-graph] [--device-preprocess]

Writes `--images` 640x480 JPEGs to a temporary folder, then times (median of `--runs`): decoding
them alone (cv2.imread), on one thread and side by side on the host threads (`read_images`,
`rtmdet.host_pool`); letterboxing the decoded batch (`letterbox_batch`) against stacking the
letterboxed images and transposing the stack (as it did before), and into a reused array (a
pinned buffer's case) against a padded copy per image split into the planes (before whole-row
images went straight into the planes); `run_inference` over the paths with prefetch off and on,
random weights with the head spread (`spread_head`), `--score-thr` (0.3: a trained model's
post-processing load; the reference 0.001 makes the worst case). Prints images/s and the
ratio; the detections of both paths are checked to be identical. The whole path is timed again
with the host work on one thread (`RTMDET_HOST_THREADS=1`), the baseline of the host threads.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from rtmdet.api import build_model
from rtmdet.data.images import read_image
from rtmdet.data.letterbox import letterbox, letterbox_batch
from rtmdet.deploy.bench import median_seconds, spread_head
from rtmdet.host_pool import ENV as HOST_THREADS_ENV
from rtmdet.host_pool import host_threads
from rtmdet.inference import TorchBackend
from rtmdet.inference.loop import run_inference
from rtmdet.inference.stream import read_images
from rtmdet.inference.speed import SpeedOptions
from rtmdet.presets import model_config


def write_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (9, 9), 0)
    paths = []
    for i in range(n):
        p = folder / f"{i:04d}.jpg"
        cv2.imwrite(str(p), np.roll(base, 7 * i, axis=1))
        paths.append(p)
    return paths


@contextlib.contextmanager
def one_host_thread():
    """The host work on the calling thread only (`rtmdet.host_pool` with one thread)."""
    before = os.environ.get(HOST_THREADS_ENV)
    os.environ[HOST_THREADS_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[HOST_THREADS_ENV]
        else:
            os.environ[HOST_THREADS_ENV] = before


def padded_then_split(arrays, size, out):
    """The baseline of the in-place split: each image letterboxed into a padded HWC copy, which
    is then split into the planes (what `letterbox_batch` did for every image before)."""
    for i, a in enumerate(arrays):
        cv2.split(letterbox(a, size)[0], list(out[i]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="rtmdet-tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--score-thr", type=float, default=0.3)
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--cuda-graph", action="store_true")
    ap.add_argument("--device-preprocess", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = spread_head(build_model(model_config(args.model)).to(args.device).eval())
    options = SpeedOptions(fuse=True, half=args.half, cuda_graph=args.cuda_graph,
                           preprocess="device" if args.device_preprocess else "cpu")
    backend = TorchBackend(model, options)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        kw = dict(batch_size=args.batch, score_thr=args.score_thr)
        plain = run_inference(backend, paths, prefetch=False, **kw)  # warm-up + reference
        ahead = run_inference(backend, paths, prefetch=True, **kw)
        same = all(torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
                   for a, b in zip(plain, ahead))
        t_read = median_seconds(lambda: [read_image(p) for p in paths], args.runs)
        t_read_pool = median_seconds(lambda: read_images(paths), args.runs)
        arrays = [read_image(p) for p in paths[:args.batch]]
        size = (640, 640)
        t_box = median_seconds(lambda: letterbox_batch(arrays, size), args.runs)
        t_stack = median_seconds(lambda: np.ascontiguousarray(np.stack(
            [letterbox(a, size)[0] for a in arrays]).transpose(0, 3, 1, 2)), args.runs)
        buf = np.empty((len(arrays), 3, *size), dtype=np.uint8)  # reused, as a pinned buffer is
        t_reuse = median_seconds(lambda: letterbox_batch(arrays, size, out=buf), args.runs)
        t_padded = median_seconds(lambda: padded_then_split(arrays, size, buf), args.runs)
        t_off = median_seconds(lambda: run_inference(backend, paths, prefetch=False, **kw), args.runs)
        t_on = median_seconds(lambda: run_inference(backend, paths, prefetch=True, **kw), args.runs)
        with one_host_thread():
            t_off_one = median_seconds(lambda: run_inference(backend, paths, prefetch=False, **kw), args.runs)
            t_on_one = median_seconds(lambda: run_inference(backend, paths, prefetch=True, **kw), args.runs)
    n = args.images
    print(f"{args.model} on {args.device} ({torch.get_num_threads()} threads), {options.describe()}, "
          f"{n} JPEGs 640x480, batch {args.batch}, score_thr {args.score_thr}")
    print(f"decode alone          {n / t_read:8.1f} img/s   on {host_threads()} host threads: "
          f"{n / t_read_pool:.1f} img/s ({t_read / t_read_pool:.2f}x)")
    print(f"letterbox batch       {len(arrays) / t_box:8.1f} img/s   stack + transpose: "
          f"{len(arrays) / t_stack:.1f} img/s ({t_stack / t_box:.2f}x)")
    print(f"  into a reused array {len(arrays) / t_reuse:8.1f} img/s   padded copy, then split: "
          f"{len(arrays) / t_padded:.1f} img/s ({t_padded / t_reuse:.2f}x)")
    print(f"prefetch off          {n / t_off:8.1f} img/s   decoding on one thread: {n / t_off_one:.1f} img/s "
          f"({t_off_one / t_off:.2f}x)")
    print(f"prefetch on           {n / t_on:8.1f} img/s   {t_off / t_on:.2f}x   identical: {same}   "
          f"decoding on one thread: {n / t_on_one:.1f} img/s ({t_on_one / t_on:.2f}x)")


if __name__ == "__main__":
    main()
