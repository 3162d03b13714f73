"""Deployment latency: RTMDet-tiny (random weights) at 640 on CPU, torch vs ONNX Runtime.

    python3 benchmarks/bench_deploy.py [--runs 20] [--warmup 3] [--batch 1] [--nms]

Prints pre-processing / inference / post-processing latency (median and p90) and throughput
per backend, with the speed ratio vs the torch backend measured in the same run. The random head
is spread (`rtmdet.deploy.bench.spread_head`): most (prior, class) pairs pass
score_thr=0.001 with a real box, so the reference post-processing runs NMS over tens of
thousands of boxes, far slower than with trained weights (plain random init, used before
2026-11-27, gives boxes of zero width that the min_bbox_size filter drops: NMS got nothing);
`--nms` times the graph backends with NMS inside the graph instead."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import rtmdet
from rtmdet.api import checkpoint_meta
from rtmdet.deploy.bench import format_table, run_bench, spread_head


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--nms", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = spread_head(rtmdet.create("rtmdet-tiny"))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tiny.pth"
        torch.save({"meta": checkpoint_meta(model), "state_dict": model.state_dict()}, ckpt)
        rows = run_bench(str(ckpt), imgsz=args.imgsz, batch=args.batch, runs=args.runs,
                         warmup=args.warmup, device="cpu", nms=args.nms)
    print(f"rtmdet-tiny (random weights), batch {args.batch}, {args.imgsz}x{args.imgsz}, CPU "
          f"{torch.get_num_threads()} threads, {args.runs} runs after {args.warmup} warm-up"
          f"{', in-graph NMS for graph backends' if args.nms else ''}")
    print(format_table(rows, ratios=True))


if __name__ == "__main__":
    main()
