"""Where a training loader worker's time goes: the recipe's stage-1 and stage-2 pipelines step by
step, and the DataLoader with its workers running OpenCV on one thread each or on OpenCV's default.

    python benchmarks/bench_loader.py [--model rtmdet-tiny] [--size 640] [--images 64]
        [--samples 300] [--workers 2] [--batch 16] [--batches 8] [--runs 2]

Writes `--images` synthetic JPEGs of COCO-like sizes (640 wide, 427-640 tall) with shapes to a temporary
folder, then:

* per step: ms per image of reading (cv2.imread + the sample), each transform and the tensor
  conversion, over `--samples` draws of `TrainDataset` in this process (OpenCV on one thread,
  what a worker gets), after a warm-up that fills the mosaic/mixup caches; one line compares
  the colour jitter with mmdet's per-pixel int16 formula on the same pipeline images.
* loader: images/s of `build_train_loader` with `--workers` workers (best of `--runs`), each
  worker's OpenCV on one thread (the default) against OpenCV's default thread count in every
  worker (one per core: W x cores threads), and the ratio.
"""
from __future__ import annotations

import argparse
import collections
import tempfile
import time

import cv2
import numpy as np

from rtmdet.data.datasets import load_dataset
from rtmdet.data.loader import TrainDataset, build_train_loader, loader_images_per_s
from rtmdet.data.synthetic import make_shapes_dataset
from rtmdet.data.transforms import YOLOXHSVRandomAug
from rtmdet.presets import get_record


def hsv_mmdet(img: np.ndarray, rng: np.random.Generator, deltas=(5, 30, 30)) -> np.ndarray:
    """mmdet's YOLOXHSVRandomAug: int16 arithmetic on every pixel (the baseline)."""
    gains = rng.uniform(-1, 1, 3) * np.array(deltas, np.float64)
    gains *= rng.integers(0, 2, 3)
    gains = gains.astype(np.int16)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def profile_stage(data, model: str, size: int, stage: int, samples: int):
    """ms per image of each step of one stage's pipeline, the whole draw, and the images the
    colour jitter saw (for the baseline comparison)."""
    ds = TrainDataset(data, model_size=get_record(model).pipeline, img_scale=size, stage=stage)
    times: dict[str, float] = collections.defaultdict(float)
    hsv_inputs: list[np.ndarray] = []

    def timed(name, fn, keep=None):
        def run(*a):
            if keep is not None and len(keep) < 64:
                keep.append(a[0].img.copy())
            t = time.perf_counter()
            out = fn(*a)
            times[name] += time.perf_counter() - t
            return out
        return run

    pipe = ds.pipelines[stage]
    pipe.transforms = [timed(type(t).__name__, t, hsv_inputs if isinstance(t, YOLOXHSVRandomAug) else None)
                       for t in pipe.transforms]
    ds.load_sample = timed("read", ds.load_sample)
    ds.to_tensors = timed("to tensors", ds.to_tensors)
    for i in range(60):  # fill the caches (mosaic 40, mixup 20)
        ds[i % len(ds)]
    times.clear()
    t = time.perf_counter()
    for i in range(samples):
        ds[i % len(ds)]
    whole = (time.perf_counter() - t) / samples
    return {k: v / samples for k, v in times.items()}, whole, hsv_inputs


def time_hsv(imgs: list[np.ndarray], runs: int = 3) -> tuple[float, float]:
    """Seconds per image of our colour jitter and mmdet's formula on the same images and draws."""
    from rtmdet.data.transforms import Sample
    aug = YOLOXHSVRandomAug()
    best = {}
    for name, fn in (("ours", lambda im, r: aug(Sample(im), r).img), ("mmdet", hsv_mmdet)):
        ts = []
        for _ in range(runs):
            rng = np.random.default_rng(0)
            t = time.perf_counter()
            for im in imgs:
                fn(im, rng)
            ts.append((time.perf_counter() - t) / len(imgs))
        best[name] = min(ts)
    return best["ours"], best["mmdet"]


def loader_rate(data, model: str, size: int, stage: int, workers: int, batch: int, batches: int,
                opencv_threads, runs: int) -> float:
    ds = TrainDataset(data, model_size=get_record(model).pipeline, img_scale=size, stage=stage)
    loader = build_train_loader(ds, batch, num_workers=workers, persistent_workers=True,
                                opencv_threads=opencv_threads)
    return max(loader_images_per_s(loader, batches, stage)[0] for _ in range(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="rtmdet-tiny")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="bench_loader_")
    make_shapes_dataset(root, num_images=args.images, image_size=((427, 640), (640, 640)))
    data = load_dataset(root, "train")
    default_threads = cv2.getNumThreads()

    cv2.setNumThreads(0)  # this process profiles what one worker does
    for stage in (1, 2):
        steps, whole, hsv_imgs = profile_stage(data, args.model, args.size, stage, args.samples)
        print(f"\n{args.model} stage {stage} pipeline at {args.size}, {args.samples} draws in one process "
              f"(OpenCV on one thread): {whole * 1e3:.2f} ms per image, {1 / whole:.0f} images/s")
        print(f"| {'step':<18} | {'ms/image':>8} | {'share':>5} |")
        print(f"|{'-' * 20}|{'-' * 10}|{'-' * 7}|")
        for name, v in steps.items():
            print(f"| {name:<18} | {v * 1e3:>8.2f} | {v / whole:>5.0%} |")
        other = whole - sum(steps.values())
        print(f"| {'(the rest)':<18} | {other * 1e3:>8.2f} | {other / whole:>5.0%} |")
        ours, ref = time_hsv(hsv_imgs)
        print(f"colour jitter on {len(hsv_imgs)} of these images: {ours * 1e3:.2f} ms vs mmdet's per-pixel "
              f"int16 formula {ref * 1e3:.2f} ms ({ref / ours:.2f}x, the same pixels: tests/test_transforms.py)")
    cv2.setNumThreads(default_threads)

    if args.workers:
        print(f"\nDataLoader, {args.workers} workers, batch {args.batch}, images/s (best of {args.runs}); "
              f"OpenCV's default here: {default_threads} threads in every worker")
        print(f"| {'stage':>5} | {'1 thread/worker':>15} | {'OpenCV default':>14} | {'ratio':>6} |")
        print(f"|{'-' * 7}|{'-' * 17}|{'-' * 16}|{'-' * 8}|")
        for stage in (1, 2):
            one = loader_rate(data, args.model, args.size, stage, args.workers, args.batch, args.batches,
                              0, args.runs)
            many = loader_rate(data, args.model, args.size, stage, args.workers, args.batch, args.batches,
                               None, args.runs)
            print(f"| {stage:>5} | {one:>15.1f} | {many:>14.1f} | {one / many:>5.2f}x |", flush=True)


if __name__ == "__main__":
    main()
