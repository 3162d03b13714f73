"""Training throughput of RTMDet (CPU or CUDA): the step in float32 / AMP float16 / bfloat16 with
the trainer's channels-last and fused AdamW, where the step's time goes, and the real training
loader alone; plus the batched assigner against a per-image loop.

* step: images/s of one full training step (forward, RTMDet loss incl. assignment, backward,
  AdamW) through the trainer's own code (`rtmdet.train.step`), on random images with random
  boxes, model in train mode, median over `--iters` steps after `--warmup`. Rows: `fp32`
  (the baseline: contiguous NCHW, foreach AdamW), then as the Trainer runs on that device
  (CUDA: channels_last + fused AdamW) in fp32, fp16 (GradScaler) and bf16 (no scaler);
  `--compile` adds torch.compile rows. Every row is also given as a ratio to the baseline of
  the same run. The share columns split a step (timed again with a device sync around each
  part): forward, assigner (`DynamicSoftLabelAssigner.assign`), the rest of the loss, backward
  + optimizer.
* loader: images/s of the training DataLoader alone (the recipe's stage-1 and stage-2
  pipelines of the model at that size, on a synthetic shapes dataset, `--workers` persistent
  workers, batches drawn and not computed), and its ratio to the fp32 step: below the best step
  row, the loader limits training. Each worker runs OpenCV on one thread (`build_train_loader`);
  `--loader-opencv-default` adds a stage-1 row with OpenCV's default thread count (one per
  core) in every worker, what the loader did before.
* EMA: ms of one `ExpMomentumEMA.update` (multi-tensor ops) against the same arithmetic tensor by
  tensor (two kernels per tensor on a GPU), per model, as the Trainer holds it (channels-last on
  CUDA).
* assigner: time per batch of `DynamicSoftLabelAssigner.assign` over B images at once against a
  Python loop calling it once per image (B=1, that image's gts only), on the same inputs; the
  assignments are checked to be identical before timing.

    python benchmarks/bench_train.py [--device cpu|cuda] [--models rtmdet-tiny rtmdet-s]
                                     [--sizes 320 640] [--batch 8] [--iters 3] [--warmup 1]
                                     [--modes fp32 fp16 bf16] [--compile] [--workers 4]
                                     [--loader-images 64] [--loader-batches 10] [--skip-loader]
                                     [--loader-opencv-default] [--skip-ema]
                                     [--threads N] [--classes 80] [--assign-batch 8]
                                     [--assign-gts 1 20] [--assign-size 640] [--skip-assigner]

The loop column is B calls with B=1 (each image's own gts, no padding); a second assigner row
uses the same gt count in every image (the middle of --assign-gts), where padding costs nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import cv2
import torch

import rtmdet
from rtmdet.ops.boxes import grid_priors
from rtmdet.presets import get_record
from rtmdet.train import assigner as assigner_mod
from rtmdet.train.assigner import DynamicSoftLabelAssigner
from rtmdet.train.losses import pad_gts
from rtmdet.train.schedule import build_optimizer
from rtmdet.train.step import AMP_DTYPES, backward_step, forward_loss, grad_scaler

MODES = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


def random_gts(g: torch.Generator, batch: int, size: int, num_classes: int, n_range=(1, 20)):
    boxes, labels = [], []
    for _ in range(batch):
        n = int(torch.randint(n_range[0], n_range[1] + 1, (1,), generator=g))
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.05) * size
        xy = torch.rand(n, 2, generator=g) * (size - wh)
        boxes.append(torch.cat([xy, xy + wh], 1))
        labels.append(torch.randint(0, num_classes, (n,), generator=g))
    return boxes, labels


def bench_ema(name: str, device: torch.device, iters: int = 20) -> tuple[float, float]:
    """Seconds of one EMA update tensor by tensor (the arithmetic of the update) and of
    `ExpMomentumEMA.update`."""
    from rtmdet.train.ema import ExpMomentumEMA
    model = rtmdet.create(name).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    ema = ExpMomentumEMA(model)
    ema.update(model)

    @torch.no_grad()
    def per_tensor():
        m = ema.momentum_at(ema.steps)
        for a, src in ema._pairs(model):
            if a.dtype.is_floating_point:
                a.mul_(1 - m).add_(src, alpha=m)
    return time_fn(per_tensor, iters, 3, device), time_fn(lambda: ema.update(model), iters, 3, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, iters: int, warmup: int, device: torch.device = torch.device("cpu")) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


@contextlib.contextmanager
def timed_assigner(device: torch.device, acc: dict):
    """`DynamicSoftLabelAssigner.assign` timed (device-synchronised) into acc["assign"]."""
    orig = assigner_mod.DynamicSoftLabelAssigner.assign

    def assign(self, *a, **kw):
        sync(device)
        t = time.perf_counter()
        out = orig(self, *a, **kw)
        sync(device)
        acc["assign"] = acc.get("assign", 0.0) + time.perf_counter() - t
        return out

    assigner_mod.DynamicSoftLabelAssigner.assign = assign
    try:
        yield
    finally:
        assigner_mod.DynamicSoftLabelAssigner.assign = orig


def pinned_batch(data: dict) -> dict:
    """Every tensor of a collated batch (and of its per-image lists) in page-locked memory."""
    return {k: v.pin_memory() if torch.is_tensor(v) else [t.pin_memory() for t in v] for k, v in data.items()}


def bench_step(name: str, size: int, batch: int, iters: int, warmup: int, num_classes: int,
               device: torch.device, mode: str, tuned: bool, compile_net: bool = False):
    """(images/s, {part: share of the step}) of one configuration; `tuned`: channels-last and
    fused AdamW as the Trainer uses them on CUDA (no-ops on the CPU, as in the Trainer)."""
    g = torch.Generator().manual_seed(0)
    model = rtmdet.create(name, num_classes=num_classes).to(device).train()
    cl = tuned and device.type == "cuda"
    if cl:
        model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, 1e-4, fused=None if tuned else False)
    dtype = AMP_DTYPES[MODES[mode]] if MODES[mode] else None
    scaler = grad_scaler(dtype)
    net = torch.compile(model) if compile_net else model
    # a collated batch as the loader gives it: uint8, a channels-last view of HWC pixels
    imgs = (torch.rand(batch, size, size, 3, generator=g) * 255).to(torch.uint8).permute(0, 3, 1, 2)
    boxes, labels = random_gts(g, batch, size, num_classes)
    data = {"imgs": imgs, "boxes": boxes, "labels": labels}
    if device.type == "cuda":  # pinned, as the Trainer's loader gives it (pin_memory=True)
        data = pinned_batch(data)
    marks: list[tuple[str, float]] = []

    def mark(part: str) -> None:
        sync(device)
        marks.append((part, time.perf_counter()))

    def step(m=None):
        parts = forward_loss(net, model, model.family, data, device, dtype, cl, mark=m)
        backward_step(sum(parts.values()), opt, scaler)
        if m:
            m("backward")

    ips = batch / time_fn(step, iters, warmup, device)
    totals: dict[str, float] = {}
    for _ in range(iters):
        marks.clear()
        acc: dict[str, float] = {}
        sync(device)
        t0 = time.perf_counter()
        with timed_assigner(device, acc):
            step(mark)
        prev = t0
        for part, t in marks:
            totals[part] = totals.get(part, 0.0) + t - prev
            prev = t
        totals["assign"] = totals.get("assign", 0.0) + acc.get("assign", 0.0)
    totals["loss"] -= totals["assign"]
    whole = sum(v for k, v in totals.items())
    return ips, {k: v / whole for k, v in totals.items()}


def bench_loader(name: str, size: int, batch: int, workers: int, images: int, batches: int,
                 root: str, stages=(1, 2), opencv_threads: int | None = 0) -> dict[int, float]:
    """Images/s of the real training loader (recipe stage 1 and 2) on the synthetic set;
    ``opencv_threads=None``: OpenCV's own thread count in every worker (the old behaviour)."""
    from rtmdet.data.datasets import load_dataset
    from rtmdet.data.loader import TrainDataset, build_train_loader, loader_images_per_s
    data = load_dataset(root, "train")
    out = {}
    for stage in stages:
        ds = TrainDataset(data, model_size=get_record(name).pipeline, img_scale=size, stage=stage)
        loader = build_train_loader(ds, batch, num_workers=workers, persistent_workers=True,
                                    prefetch_factor=4, pin_memory=torch.cuda.is_available(),
                                    opencv_threads=opencv_threads)
        out[stage] = loader_images_per_s(loader, batches, stage)[0]
        del loader
    return out


def bench_assigner(batch: int, size: int, num_classes: int, n_range, iters: int, warmup: int,
                   device: torch.device = torch.device("cpu")):
    g = torch.Generator().manual_seed(1)
    strides = (8, 16, 32)
    priors = torch.cat(grid_priors([(size // s, size // s) for s in strides], strides, torch.float32,
                                   "cpu", with_stride=True))
    N = len(priors)
    boxes, labels = random_gts(g, batch, size, num_classes, n_range)
    gt_boxes, gt_labels, gt_valid = pad_gts(boxes, labels)
    # predictions: boxes around the priors of plausible size, logits near the prior bias
    wh = torch.rand(batch, N, 2, generator=g) * 6 * priors[None, :, 2:] + 1
    pred_boxes = torch.cat([priors[None, :, :2] - wh / 2, priors[None, :, :2] + wh / 2], -1)
    pred_scores = torch.randn(batch, N, num_classes, generator=g) - 4.0
    priors, pred_boxes, pred_scores, gt_boxes, gt_labels, gt_valid = (
        t.to(device) for t in (priors, pred_boxes, pred_scores, gt_boxes, gt_labels, gt_valid))
    boxes, labels = [b.to(device) for b in boxes], [lb.to(device) for lb in labels]
    a = DynamicSoftLabelAssigner()

    def batched():
        return a.assign(pred_scores, pred_boxes, priors, gt_boxes, gt_labels, gt_valid)

    def loop():
        return [a.assign(pred_scores[i:i + 1], pred_boxes[i:i + 1], priors, boxes[i][None], labels[i][None])
                for i in range(batch)]

    rb, rl = batched(), loop()
    for i, r in enumerate(rl):
        assert torch.equal(rb.gt_inds[i], r.gt_inds[0]) and torch.equal(rb.labels[i], r.labels[0]), \
            "batched and per-image assignments differ"
    return N, time_fn(batched, iters, warmup, device), time_fn(loop, iters, warmup, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--models", nargs="+", default=["rtmdet-tiny", "rtmdet-s"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--modes", nargs="+", choices=tuple(MODES), default=None,
                    help="default: fp32 fp16 bf16 on CUDA, fp32 bf16 on the CPU")
    ap.add_argument("--compile", action="store_true", help="add torch.compile rows (slow first steps)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--loader-images", type=int, default=64)
    ap.add_argument("--loader-batches", type=int, default=10)
    ap.add_argument("--skip-loader", action="store_true")
    ap.add_argument("--loader-opencv-default", action="store_true",
                    help="also time stage 1 with OpenCV's default thread count in every worker")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--assign-batch", type=int, default=8)
    ap.add_argument("--assign-size", type=int, default=640)
    ap.add_argument("--assign-gts", nargs=2, type=int, default=[1, 20], metavar=("MIN", "MAX"))
    ap.add_argument("--assign-iters", type=int, default=10)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-assigner", action="store_true")
    ap.add_argument("--skip-ema", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device")
        torch.backends.cudnn.benchmark = True  # as the Trainer (fixed input size)
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    modes = args.modes or (["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    print(f"torch {torch.__version__}, {where}, {args.classes} classes")
    tuned_name = "cl+fused" if device.type == "cuda" else "trainer"
    if not args.skip_throughput:
        print(f"\ntraining step (forward + loss incl. assigner + backward + AdamW), batch {args.batch}, "
              f"median of {args.iters} after {args.warmup} warm-up; x: images/s over the fp32 baseline; "
              f"shares from a second pass with a device sync around each part")
        print(f"| {'model':<12} | {'imgsz':>5} | {'setting':<22} | {'images/s':>8} | {'x fp32':>6} | "
              f"{'fwd':>4} | {'assign':>6} | {'loss':>4} | {'bwd+opt':>7} |")
        print(f"|{'-' * 14}|{'-' * 7}|{'-' * 24}|{'-' * 10}|{'-' * 8}|{'-' * 6}|{'-' * 8}|{'-' * 6}|{'-' * 9}|")
        root = None
        scratch = contextlib.ExitStack()  # the loader's synthetic images, removed after the table
        for name in args.models:
            for size in args.sizes:
                rows = [("fp32", False, False)]
                rows += [(m, True, False) for m in modes if device.type == "cuda" or m != "fp32"]
                if args.compile:
                    rows += [(m, True, True) for m in modes if m != "fp32"][:1] or [("fp32", True, True)]
                base = None
                for mode, tuned, comp in rows:
                    label = mode if not tuned else f"{mode} {tuned_name}" + (" compile" if comp else "")
                    if not tuned:
                        label = "fp32 (baseline)"
                    try:
                        ips, share = bench_step(name, size, args.batch, args.iters, max(args.warmup, 2 if comp else 0),
                                                args.classes, device, mode, tuned, comp)
                    except Exception as e:  # one setting failing (e.g. no bf16) must not end the run
                        print(f"| {name:<12} | {size:>5} | {label:<22} | failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:80]}", flush=True)
                        continue
                    base = base or ips
                    print(f"| {name:<12} | {size:>5} | {label:<22} | {ips:>8.1f} | {ips / base:>5.2f}x | "
                          f"{share['forward']:>4.0%} | {share['assign']:>6.0%} | {share['loss']:>4.0%} | "
                          f"{share['backward']:>7.0%} |", flush=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                if not args.skip_loader and base:
                    if root is None:
                        from rtmdet.data.synthetic import make_shapes_dataset
                        root = scratch.enter_context(tempfile.TemporaryDirectory(prefix="bench_train_"))
                        make_shapes_dataset(root, num_images=args.loader_images,
                                            image_size=((360, 640), (480, 800)))
                    lips = bench_loader(name, size, args.batch, args.workers, args.loader_images,
                                        args.loader_batches, root)
                    rows = [(f"loader stage {stage} ({args.workers} w)", v) for stage, v in lips.items()]
                    if args.loader_opencv_default and args.workers:
                        old = bench_loader(name, size, args.batch, args.workers, args.loader_images,
                                           args.loader_batches, root, stages=(1,), opencv_threads=None)[1]
                        rows.append(("loader stage 1, cv2 MT", old))
                        print(f"  (OpenCV one thread per worker vs OpenCV's default {cv2.getNumThreads()} "
                              f"threads in every worker, stage 1: {lips[1] / old:.2f}x)", flush=True)
                    for label, v in rows:
                        print(f"| {name:<12} | {size:>5} | {label:<22} | "
                              f"{v:>8.1f} | {v / base:>5.3g}x | {'':>4} | {'':>6} | {'':>4} | {'':>7} |",
                              flush=True)
        scratch.close()
    if not args.skip_ema:
        print(f"\nEMA update per step on {args.device}: tensor by tensor vs multi-tensor (median of 20)")
        for name in args.models:
            old, new = bench_ema(name, device)
            print(f"| {name:<12} | {old * 1e3:>7.2f} ms | {new * 1e3:>7.2f} ms | {old / new:>5.2f}x |", flush=True)
    if args.skip_assigner:
        return
    B = args.assign_batch
    ranges = [tuple(args.assign_gts)]
    if ranges[0][0] != ranges[0][1]:  # also the same gt count in every image: no padding
        mid = (ranges[0][0] + ranges[0][1]) // 2
        ranges.append((mid, mid))
    print(f"\nDynamicSoftLabelAssigner on {args.device}, {B} images, {args.assign_size}px, {args.classes} "
          f"classes, median of {args.assign_iters}; the batched call pads every image to the largest gt count")
    print(f"| {'gts/image':>9} | {'priors':>6} | {'batched ms':>10} | {'loop ms':>8} | {'loop/batched':>12} |")
    print(f"|{'-' * 11}|{'-' * 8}|{'-' * 12}|{'-' * 10}|{'-' * 14}|")
    for r in ranges:
        N, tb, tl = bench_assigner(B, args.assign_size, args.classes, r, args.assign_iters, 2, device)
        print(f"| {f'{r[0]}-{r[1]}':>9} | {N:>6} | {tb * 1e3:>10.1f} | {tl * 1e3:>8.1f} | {tl / tb:>11.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
