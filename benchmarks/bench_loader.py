"""Where a training loader worker's time goes: the recipe's stage-1 and stage-2 pipelines step by
step, and the DataLoader with its workers running OpenCV on one thread each or on OpenCV's default.

    python benchmarks/bench_loader.py [--model rtmdet-tiny | rtmdet-ins-s ...] [--size 640] [--images 64]
        [--samples 300] [--workers 2] [--batch 16] [--batches 8] [--runs 2]

Writes `--images` synthetic JPEGs of COCO-like sizes (640 wide, 427-640 tall) with shapes to a temporary
folder (RTMDet-Ins models: with their masks, which every geometric step moves too), then:

* per step: ms per image of reading (cv2.imread + the sample), each step of the pipeline
  (`Compose.steps`: RandomResize + RandomCrop as one) and the tensor conversion, over
  `--samples` draws of `TrainDataset` in this process (OpenCV on one thread, what a worker
  gets), after a warm-up that fills the mosaic/mixup caches. Two lines compare, on the samples
  those steps saw, the colour jitter with mmdet's per-pixel int16 formula and the fused resize +
  crop with resizing the whole image, then cropping (the baselines; same results). RTMDet-Ins:
  the whole draw with the reference's polygon masks (the default) against bitmap masks
  (`MaskTarget`, the loader before polygons).
* loader: images/s of `build_train_loader` with `--workers` workers (best of `--runs`), each
  worker's OpenCV on one thread (the default) against OpenCV's default thread count in every
  worker (one per core: W x cores threads), and the ratio; images decoded once into memory
  (`cache=true`) against read from disk every time; for RTMDet-Ins, masks on the loss's grid
  (what training ships) against full-size masks.
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
from rtmdet.data.target_loaders import TARGET_LOADERS, MaskLoader
from rtmdet.data.synthetic import make_shapes_dataset
from rtmdet.data.transforms import RandomCrop, RandomResize, YOLOXHSVRandomAug
from rtmdet.data.transforms.photometric import hsv_shift_per_pixel
from rtmdet.families import get_family
from rtmdet.presets import get_record


def hsv_mmdet(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmdet's YOLOXHSVRandomAug: int16 arithmetic on every pixel (the baseline)."""
    return hsv_shift_per_pixel(img, YOLOXHSVRandomAug().draw_gains(rng))


def train_set(data, model: str, size: int, stage: int, full_targets: bool = False,
              bitmaps: bool = False) -> TrainDataset:
    """The training dataset as `Trainer` builds it: the family's targets besides boxes
    (RTMDet-Ins: polygon masks, returned on the loss's grid; ``full_targets``: full-size masks;
    ``bitmaps``: bitmap masks instead of polygons)."""
    family = get_family(get_record(model).family)
    targets = {name: MaskLoader("bitmaps") if bitmaps and name == "masks" else TARGET_LOADERS[name]
               for name in family.targets}
    return TrainDataset(data, model_size=get_record(model).pipeline, img_scale=size, stage=stage,
                        targets=targets, target_steps=None if full_targets else dict(family.target_steps))


def profile_stage(data, model: str, size: int, stage: int, samples: int, bitmaps: bool = False):
    """ms per image of each step of one stage's pipeline (`Compose.steps`: RandomResize +
    RandomCrop run as one), the whole draw, and copies of what the colour jitter and the
    resize + crop step saw (for the baseline comparisons)."""
    ds = train_set(data, model, size, stage, bitmaps=bitmaps)
    times: dict[str, float] = collections.defaultdict(float)
    seen: dict[str, list] = collections.defaultdict(list)

    def timed(name, fn):
        def run(*a):
            if name in ("YOLOXHSVRandomAug", "RandomResize+RandomCrop") and len(seen[name]) < 64:
                seen[name].append(a[0].copy())
            t = time.perf_counter()
            out = fn(*a)
            times[name] += time.perf_counter() - t
            return out
        return run

    pipe = ds.pipelines[stage]
    plan = [(name, timed(name, fn)) for name, fn in pipe.steps()]
    pipe.steps = lambda: plan
    ds.load_sample = timed("read", ds.load_sample)
    ds.to_tensors = timed("to tensors", ds.to_tensors)
    for i in range(60):  # fill the caches (mosaic 40, mixup 20)
        ds[i % len(ds)]
    times.clear()
    t = time.perf_counter()
    for i in range(samples):
        ds[i % len(ds)]
    whole = (time.perf_counter() - t) / samples
    pairs = [t for t in ds.pipelines[stage].transforms if isinstance(t, (RandomResize, RandomCrop))]
    return {k: v / samples for k, v in times.items()}, whole, seen, pairs


def best_per_item(fn, items, runs: int = 3) -> float:
    """Seconds per item of ``fn(item, rng)`` over ``items`` (fresh copies, the same draws each
    run), best of ``runs``."""
    ts = []
    for _ in range(runs):
        rng, batch = np.random.default_rng(0), [x.copy() for x in items]
        t = time.perf_counter()
        for x in batch:
            fn(x, rng)
        ts.append((time.perf_counter() - t) / len(items))
    return min(ts)


def loader_rate(data, model: str, size: int, stage: int, workers: int, batch: int, batches: int,
                runs: int, opencv_threads: int | None = 0, full_targets: bool = False,
                cache: bool = False) -> float:
    ds = train_set(data, model, size, stage, full_targets)
    if cache:  # decoded before the workers fork, as `Trainer` does with cache=true
        ds.cache_images(progress=False)
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

    with tempfile.TemporaryDirectory(prefix="bench_loader_") as root:
        run(args, root)


def run(args, root: str) -> None:
    make_shapes_dataset(root, num_images=args.images, image_size=((427, 640), (640, 640)))
    data = load_dataset(root, "train")
    default_threads = cv2.getNumThreads()

    cv2.setNumThreads(0)  # this process profiles what one worker does
    for stage in (1, 2):
        steps, whole, seen, pairs = profile_stage(data, args.model, args.size, stage, args.samples)
        print(f"\n{args.model} stage {stage} pipeline at {args.size}, {args.samples} draws in one process "
              f"(OpenCV on one thread): {whole * 1e3:.2f} ms per image, {1 / whole:.0f} images/s")
        print(f"| {'step':<23} | {'ms/image':>8} | {'share':>5} |")
        print(f"|{'-' * 25}|{'-' * 10}|{'-' * 7}|")
        for name, v in steps.items():
            print(f"| {name:<23} | {v * 1e3:>8.2f} | {v / whole:>5.0%} |")
        other = whole - sum(steps.values())
        print(f"| {'(the rest)':<23} | {other * 1e3:>8.2f} | {other / whole:>5.0%} |")
        hsv = seen["YOLOXHSVRandomAug"]
        ours = best_per_item(YOLOXHSVRandomAug(), hsv)
        ref = best_per_item(lambda x, rng: hsv_mmdet(x.img, rng), hsv)
        print(f"colour jitter on {len(hsv)} of these images: {ours * 1e3:.2f} ms vs mmdet's per-pixel "
              f"int16 formula {ref * 1e3:.2f} ms ({ref / ours:.2f}x, the same pixels: tests/test_transforms.py)")
        if seen["RandomResize+RandomCrop"]:
            resize, crop = pairs
            fused = resize.fused_with(crop)
            ours = best_per_item(fused, seen["RandomResize+RandomCrop"])
            ref = best_per_item(lambda x, rng: crop(resize(x, rng), rng), seen["RandomResize+RandomCrop"])
            print(f"resize + crop on {len(seen['RandomResize+RandomCrop'])} of these samples: {ours * 1e3:.2f} ms "
                  f"resizing only the block the crop keeps vs {ref * 1e3:.2f} ms resizing the whole image, "
                  f"then cropping ({ref / ours:.2f}x, the same samples: tests/test_transforms.py)")
        if "masks" in get_family(get_record(args.model).family).targets:
            bitmap_whole = profile_stage(data, args.model, args.size, stage, args.samples, bitmaps=True)[1]
            print(f"whole draw with polygon masks (the reference's) {whole * 1e3:.2f} ms vs bitmap masks "
                  f"{bitmap_whole * 1e3:.2f} ms ({bitmap_whole / whole:.2f}x)")
    cv2.setNumThreads(default_threads)

    if args.workers:
        loader_table(args, data, f"\nDataLoader, {args.workers} workers, batch {args.batch}, images/s (best of "
                     f"{args.runs}); OpenCV's default here: {default_threads} threads in every worker",
                     ("1 thread/worker", "OpenCV default"), {}, {"opencv_threads": None})
        loader_table(args, data, "\nDataLoader as above (1 thread/worker), images decoded once into memory "
                     "(cache=true) vs read from disk every time, images/s",
                     ("cache=true", "read"), {"cache": True}, {})
        steps = dict(get_family(get_record(args.model).family).target_steps)
        if steps:
            loader_table(args, data, f"\nDataLoader as above (1 thread/worker), targets {sorted(steps)} on the "
                         f"loss grid (step {steps}) vs full-size masks, images/s",
                         ("loss grid", "full"), {}, {"full_targets": True})


def loader_table(args, data, title: str, labels: tuple[str, str], a: dict, b: dict) -> None:
    """DataLoader images/s per stage with the `loader_rate` settings ``a`` and ``b``, and a / b."""
    print(title)
    print(f"| {'stage':>5} | {labels[0]:>15} | {labels[1]:>15} | {'ratio':>6} |")
    print(f"|{'-' * 7}|{'-' * 17}|{'-' * 17}|{'-' * 8}|")
    for stage in (1, 2):
        x, y = (loader_rate(data, args.model, args.size, stage, args.workers, args.batch, args.batches,
                            args.runs, **kw) for kw in (a, b))
        print(f"| {stage:>5} | {x:>15.1f} | {y:>15.1f} | {x / y:>5.2f}x |", flush=True)

if __name__ == "__main__":
    main()
