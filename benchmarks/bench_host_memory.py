"""CPU inference with freed blocks kept in the heap (`rtmdet.host_memory`, what the `rtmdet`
command does at start) against glibc's default (large blocks mapped and unmapped per batch).

    python benchmarks/bench_host_memory.py [--models rtmdet-tiny] [--batches 1 8] [--rounds 2]

`Detector(...).predict` (BN folded, channels-last on the CPU: the command line's path) of a
640x480 image at score_thr 0.3, random weights, ms per image (median of the runs in a process).
The setting is process-wide, so each measurement is a fresh interpreter; the two settings take
turns `--rounds` times, and the ratio is of the medians over the rounds.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import statistics, sys, time
import numpy as np, torch
import rtmdet
from rtmdet.host_memory import keep_freed_memory
from rtmdet.inference import Detector
kept = keep_freed_memory() if {keep} else False
torch.manual_seed(0)
img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
det = Detector("{model}", model=rtmdet.create("{model}").eval())
imgs = [img] * {batch}
run = lambda: det.predict(imgs, batch_size={batch}, score_thr=0.3)
run(); run()
times = []
for _ in range({runs}):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(kept, statistics.median(times) / {batch} * 1e3)
"""


def measure(model: str, batch: int, keep: bool, runs: int) -> tuple[bool, float]:
    code = CHILD.format(model=model, batch=batch, keep=keep, runs=runs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    kept, ms = out.stdout.split()
    return kept == "True", float(ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["rtmdet-tiny"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args()
    print(f"{'model':<14}{'batch':>6}{'default ms/img':>16}{'kept ms/img':>13}{'speed-up':>10}")
    for model in args.models:
        for batch in args.batches:
            base, kept, applied = [], [], True
            for _ in range(args.rounds):
                base.append(measure(model, batch, False, args.runs)[1])
                ok, ms = measure(model, batch, True, args.runs)
                applied &= ok
                kept.append(ms)
            a, b = statistics.median(base), statistics.median(kept)
            note = "" if applied else "  (not applied here: not glibc, or MALLOC_* set)"
            print(f"{model:<14}{batch:>6}{a:>16.1f}{b:>13.1f}{a / b:>9.2f}x{note}", flush=True)


if __name__ == "__main__":
    main()
