"""Per-image CPU latency of RTMDet: eager vs BN folded (NCHW) vs BN folded + channels-last
(NHWC; what `Detector` and the CLI run on the CPU by default), same run.

    python benchmarks/bench_inference.py [--models rtmdet-tiny rtmdet-s] [--runs 20] [--threads N]
        [--imgsz 640] [--batch 1]

Random weights. "network forward": the prepared network on a normalized batch; "predict (end to
end)": `model.predict` of a 640x480 image at score_thr 0.3 (letterbox, network, decoding,
post-processing). The three paths take turns, round after round, so a busy moment of a shared
machine falls on all of them; the median of each is printed with its speed-up over eager.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

import rtmdet
from rtmdet.inference.speed import SpeedOptions, prepare_network

PATHS = {"eager": dict(), "fused": dict(fuse=True, channels_last=False),
         "fused+NHWC": dict(fuse=True, channels_last=True)}


def alternate(fns: dict, runs: int, warmup: int) -> dict:
    """Median seconds of each function, the functions called in turn `runs` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["rtmdet-tiny", "rtmdet-s"])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.imgsz}, batch "
          f"{args.batch}; median of {args.runs} alternating runs after {args.warmup} warm-up")
    print(f"{'model':<17}{'path':<22}" + "".join(f"{k + ' ms':>15}" for k in PATHS)
          + "".join(f"{k + ' x':>15}" for k in list(PATHS)[1:]))
    for name in args.models:
        torch.manual_seed(0)
        model = rtmdet.create(name).eval()
        x = torch.randn(args.batch, 3, args.imgsz, args.imgsz)
        # a model per path: a model keeps one prepared copy, which taking turns would rebuild
        models = {k: copy.deepcopy(model) for k in PATHS}
        nets = {k: prepare_network(models[k], SpeedOptions(**kw)) for k, kw in PATHS.items()}
        imgs = [img] * args.batch

        def predict(k):
            return models[k].predict(imgs, score_thr=0.3, imgsz=args.imgsz, batch_size=args.batch, **PATHS[k])

        with torch.inference_mode():
            rows = [("network forward", {k: (lambda n=n: n(x)) for k, n in nets.items()}),
                    ("predict (end to end)", {k: (lambda k=k: predict(k)) for k in PATHS})]
            for label, fns in rows:
                t = alternate(fns, args.runs, args.warmup)
                print(f"{name:<17}{label:<22}" + "".join(f"{t[k] * 1e3:>15.1f}" for k in PATHS)
                      + "".join(f"{t['eager'] / t[k]:>14.2f}x" for k in list(PATHS)[1:]), flush=True)


if __name__ == "__main__":
    main()
