"""CPU training throughput of RTMDet, and the batched assigner against a per-image loop, same run.

* throughput: images/s of one full training step (forward, RTMDet loss incl. assignment,
  backward, AdamW step) on random images with random boxes, model in train mode (BN batch
  statistics), median over `--iters` steps after `--warmup`;
* assigner: time per batch of `DynamicSoftLabelAssigner.assign` over B images at once against a
  Python loop calling it once per image (B=1, that image's gts only), on the same inputs; the
  assignments are checked to be identical before timing.

    python benchmarks/bench_train.py [--models rtmdet-tiny rtmdet-s] [--sizes 320 640] [--batch 8]
                                     [--iters 3] [--warmup 1] [--threads N] [--classes 80]
                                     [--assign-batch 8] [--assign-gts 1 20] [--assign-size 640]

The loop column is B calls with B=1 (each image's own gts, no padding); a second assigner row
uses the same gt count in every image (the middle of --assign-gts), where padding costs nothing.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import rtmdet
from rtmdet.ops.boxes import grid_priors
from rtmdet.train.assigner import DynamicSoftLabelAssigner
from rtmdet.train.losses import pad_gts, rtmdet_loss
from rtmdet.train.schedule import build_optimizer


def random_gts(g: torch.Generator, batch: int, size: int, num_classes: int, n_range=(1, 20)):
    boxes, labels = [], []
    for _ in range(batch):
        n = int(torch.randint(n_range[0], n_range[1] + 1, (1,), generator=g))
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.05) * size
        xy = torch.rand(n, 2, generator=g) * (size - wh)
        boxes.append(torch.cat([xy, xy + wh], 1))
        labels.append(torch.randint(0, num_classes, (n,), generator=g))
    return boxes, labels


def time_fn(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench_throughput(name: str, size: int, batch: int, iters: int, warmup: int, num_classes: int) -> float:
    g = torch.Generator().manual_seed(0)
    model = rtmdet.create(name, num_classes=num_classes).train()
    opt = build_optimizer(model, 1e-4)
    x = torch.rand(batch, 3, size, size, generator=g) * 255
    boxes, labels = random_gts(g, batch, size, num_classes)

    def step():
        out = model(model.normalize(x))
        ld = rtmdet_loss(out, boxes, labels, (size, size), strides=model.cfg.strides)
        loss = sum(ld["loss_cls"]) + sum(ld["loss_bbox"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return batch / time_fn(step, iters, warmup)


def bench_assigner(batch: int, size: int, num_classes: int, n_range, iters: int, warmup: int):
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
    return N, time_fn(batched, iters, warmup), time_fn(loop, iters, warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["rtmdet-tiny", "rtmdet-s"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--assign-batch", type=int, default=8)
    ap.add_argument("--assign-size", type=int, default=640)
    ap.add_argument("--assign-gts", nargs=2, type=int, default=[1, 20], metavar=("MIN", "MAX"))
    ap.add_argument("--assign-iters", type=int, default=10)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {args.classes} classes")
    if not args.skip_throughput:
        print(f"\ntraining step (forward + loss + backward + AdamW), batch {args.batch}, "
              f"median of {args.iters} after {args.warmup} warm-up")
        print(f"| {'model':<12} | {'imgsz':>5} | {'images/s':>8} | {'s/step':>7} |")
        print(f"|{'-' * 14}|{'-' * 7}|{'-' * 10}|{'-' * 9}|")
        for name in args.models:
            for size in args.sizes:
                ips = bench_throughput(name, size, args.batch, args.iters, args.warmup, args.classes)
                print(f"| {name:<12} | {size:>5} | {ips:>8.2f} | {args.batch / ips:>7.2f} |", flush=True)
    B = args.assign_batch
    ranges = [tuple(args.assign_gts)]
    if ranges[0][0] != ranges[0][1]:  # also the same gt count in every image: no padding
        mid = (ranges[0][0] + ranges[0][1]) // 2
        ranges.append((mid, mid))
    print(f"\nDynamicSoftLabelAssigner, {B} images, {args.assign_size}px, {args.classes} classes, "
          f"median of {args.assign_iters}; the batched call pads every image to the largest gt count")
    print(f"| {'gts/image':>9} | {'priors':>6} | {'batched ms':>10} | {'loop ms':>8} | {'loop/batched':>12} |")
    print(f"|{'-' * 11}|{'-' * 8}|{'-' * 12}|{'-' * 10}|{'-' * 14}|")
    for r in ranges:
        N, tb, tl = bench_assigner(B, args.assign_size, args.classes, r, args.assign_iters, 2)
        print(f"| {f'{r[0]}-{r[1]}':>9} | {N:>6} | {tb * 1e3:>10.1f} | {tl * 1e3:>8.1f} | {tl / tb:>11.2f}x |",
              flush=True)

if __name__ == "__main__":
    main()
