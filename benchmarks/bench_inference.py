"""Per-image CPU latency of RTMDet at 640: eager vs `model.fuse()` (BN folded), same run.

    python benchmarks/bench_inference.py [--models rtmdet-tiny rtmdet-s] [--runs 20] [--threads N]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

import rtmdet


def time_fn(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["rtmdet-tiny", "rtmdet-s"])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.imgsz}, "
          f"median of {args.runs} runs after {args.warmup} warm-up")
    print(f"{'model':<14}{'path':<22}{'eager ms':>10}{'fused ms':>10}{'speed-up':>10}")
    for name in args.models:
        eager = rtmdet.create(name).eval()
        fused = copy.deepcopy(eager).fuse()
        x = torch.randn(1, 3, args.imgsz, args.imgsz)
        with torch.inference_mode():
            for label, fe, ff in [
                ("network forward", lambda: eager(x), lambda: fused(x)),
                ("predict (end to end)", lambda: eager.predict(img, score_thr=0.3),
                 lambda: fused.predict(img, score_thr=0.3)),
            ]:
                te = statistics.median(time_fn(fe, args.runs, args.warmup)) * 1e3
                tf = statistics.median(time_fn(ff, args.runs, args.warmup)) * 1e3
                print(f"{name:<14}{label:<22}{te:>10.1f}{tf:>10.1f}{te / tf:>9.2f}x")


if __name__ == "__main__":
    main()
