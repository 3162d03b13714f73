"""The whole inference path against the network alone, per model size, and what each speed
option changes on the reference fixtures.

    python benchmarks/bench_e2e.py [--device cuda] [--models rtmdet-tiny rtmdet-s ...]
                                   [--batch 32] [--runs 20] [--modes exact fast] [--drift] [--no-pinned]

Part 1, per size (random weights with BatchNorm statistics calibrated and the last head convs
rescaled by `rtmdet.deploy.bench.spread_head`: most scores in (0.001, 0.3) and boxes about 5
strides wide, in fp32 and fp16 alike, so at the reference settings - score_thr 0.001, nms_pre
30000 - nms_pre candidates reach NMS, as with the fixture's tiny weights (whose NMS costs more:
its scores spread wider, benchmarks/bench_postprocess.py); plain random init gives
every box zero width, which the `min_bbox_size` filter drops, so nothing would reach NMS) and
mode:
* exact: the default path (fp32, BatchNorm kept, OpenCV letterbox on the CPU);
* fast: BatchNorm fused, and on CUDA fp16 + channels-last + CUDA graph (network and decoding)
  + letterbox on the GPU (`rtmdet.inference.speed.SpeedOptions`); on the CPU BN fusion only;
* compiled (opt-in): as fast with torch.compile instead of the CUDA graph.
Batch 1: median ms of pre / infer (network + decode) / post and of the whole `run_batch`, next to
the network forward alone in the same mode ("whole/fwd"). Batch `--batch`: images/s of the whole
path against the forward alone ("whole/fwd" as a share of the forward's rate); "streamed": images/s
of `run_inference` over 4 such batches, which on a GPU letterboxes the next batch on a worker
thread while the current one runs (what `predict` / `stream` do with a list, a folder or a
video), as a share of the forward's rate, and "+side" the same with `side_stream=True` (CUDA:
each batch post-processed on a second stream while the next one's network runs). Then the
decoding alone at batch 1 (part of "infer"),
and the stages at batch `--batch` (where the whole path's time goes).

Part 2 (`--drift`, needs ../shared/fixtures): the fixture tiny weights on the three fixture
images at the reference settings, each option against the reference detections: detections
left unmatched at the parity tolerances (same label, |score| <= 1e-4, box <= 0.01 px), matched
at IoU >= 0.9 with the same label, and the largest score / box difference over those pairs.
On CUDA, TF32 is off for the fp32 rows (cuDNN would otherwise round convolutions to TF32).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import rtmdet
from rtmdet.deploy.bench import bench_images, spread_head
from rtmdet.inference import TorchBackend
from rtmdet.inference.loop import run_batch, run_inference
from rtmdet.inference.speed import SpeedOptions

SHARED = Path(os.environ.get("RTMDET_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
FIX = SHARED / "fixtures" / "rtmdet_tiny_8xb32-300e_coco"
SIZES = ["rtmdet-tiny", "rtmdet-s", "rtmdet-m", "rtmdet-l", "rtmdet-x"]
STREAM_BATCHES = 4  # batches per timed `run_inference` call ("streamed")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, runs: int, warmup: int = 2) -> float:
    """Median seconds of `fn()` (synchronized)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def mode_options(mode: str, device: torch.device) -> SpeedOptions:
    if mode == "exact":
        return SpeedOptions()
    if mode == "compiled":  # torch.compile instead of the CUDA graph (the first batch compiles)
        return SpeedOptions(fuse=True, half=device.type == "cuda", compile=True,
                            preprocess="device" if device.type == "cuda" else "cpu")
    if device.type == "cuda":
        return SpeedOptions(fuse=True, half=True, cuda_graph=True, preprocess="device")
    return SpeedOptions(fuse=True)


def stages(backend, images, cfg, device, runs: int) -> dict[str, float]:
    """Median seconds of each stage and of the whole path for one batch."""
    size = backend.input_size(cfg.imgsz)
    with torch.inference_mode():
        x, metas = backend.preprocess(images, size)
        outs = backend.infer(x)
        raw = backend.net(x)
        hw = tuple(x.shape[-2:])
        return {
            "decode": timed(lambda: backend.model.decode(raw, hw), device, runs),
            "pre": timed(lambda: backend.preprocess(images, size), device, runs),
            "infer": timed(lambda: backend.infer(x), device, runs),
            "post": timed(lambda: backend.postprocess(outs, metas, cfg), device, runs),
            "whole": timed(lambda: run_batch(backend, images, cfg), device, runs),
            "forward": timed(lambda: backend.net(x), device, runs),
        }


def bench_speed(args, device: torch.device) -> None:
    print(f"\n## whole path vs forward ({describe(device)}; random weights, head spread, 640x640 input, "
          f"480x640 images, reference test settings; median of {args.runs} runs"
          f"{'; uploads from plain arrays (--no-pinned)' if args.no_pinned else ''})")
    print(f"{'model':<12} {'mode':<6} {'pre ms':>7} {'infer':>7} {'post':>7} {'whole':>7} "
          f"{'fwd':>7} {'whole/fwd':>9} | b{args.batch} {'whole img/s':>11} {'fwd img/s':>10} {'share':>6}"
          f" | {'streamed':>8} {'share':>6} {'+side':>6} | {'decode ms':>9} | b{args.batch} pre/infer/post ms")
    one, many = bench_images(1), bench_images(args.batch)
    flow = many * STREAM_BATCHES
    for name in args.models:
        model = spread_head(rtmdet.create(name).to(device).eval())
        cfg = model.test_cfg
        for mode in args.modes:
            backend = TorchBackend(model, mode_options(mode, device))
            s1 = stages(backend, one, cfg, device, args.runs)
            sb = stages(backend, many, cfg, device, max(3, args.runs // 4))
            whole_rate, fwd_rate = args.batch / sb["whole"], args.batch / sb["forward"]
            streamed = lambda b=backend, side=False: run_inference(b, flow, batch_size=args.batch,
                                                                   side_stream=side)
            reps, warm = max(1, args.runs // 8), 1 if device.type == "cuda" else 0
            stream_rate = len(flow) / timed(streamed, device, reps, warmup=warm)
            side = f"{len(flow) / timed(lambda: streamed(side=True), device, reps, warmup=warm) / fwd_rate:>6.0%}" \
                if device.type == "cuda" else f"{'-':>6}"
            print(f"{name:<12} {mode:<6} {s1['pre'] * 1e3:>7.2f} {s1['infer'] * 1e3:>7.2f} "
                  f"{s1['post'] * 1e3:>7.2f} {s1['whole'] * 1e3:>7.2f} {s1['forward'] * 1e3:>7.2f} "
                  f"{s1['whole'] / s1['forward']:>8.2f}x | {'':>3} {whole_rate:>11.1f} {fwd_rate:>10.1f} "
                  f"{whole_rate / fwd_rate:>6.0%} | {stream_rate:>8.1f} {stream_rate / fwd_rate:>6.0%} "
                  f"{side} | "
                  f"{s1['decode'] * 1e3:>9.2f} | {sb['pre'] * 1e3:.1f}/{sb['infer'] * 1e3:.1f}/"
                  f"{sb['post'] * 1e3:.1f}", flush=True)
            del backend
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ---- drift of each option on the fixtures ---------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def drift(det, ref: dict) -> tuple[int, int, float, float]:
    """(unmatched at the parity tolerances, matched at IoU >= 0.9, max |d score|, max |d box|)."""
    ours = det.numpy()
    rb, rs, rl = (np.asarray(ref[k], dtype=np.float64) for k in ("bboxes", "scores", "labels"))
    b, s, lab = ours.boxes.astype(np.float64), ours.scores.astype(np.float64), ours.labels
    strict_used = np.zeros(len(s), bool)
    unmatched = 0
    for i in range(len(rs)):
        ok = (~strict_used) & (lab == rl[i]) & (np.abs(s - rs[i]) <= 1e-4) & \
             (np.abs(b - rb[i]).max(axis=1) <= 1e-2)
        j = np.flatnonzero(ok)
        if len(j):
            strict_used[j[0]] = True
        else:
            unmatched += 1
    iou = iou_matrix(rb, b) if len(b) and len(rb) else np.zeros((len(rb), len(b)))
    iou[rl[:, None] != lab[None, :]] = 0
    used = np.zeros(len(s), bool)
    matched, ds, db = 0, 0.0, 0.0
    for i in np.argsort(-rs, kind="stable"):
        cand = np.where(used, -1, iou[i] - np.abs(s - rs[i]))
        j = int(np.argmax(cand)) if len(cand) else -1
        if j >= 0 and not used[j] and iou[i, j] >= 0.9:
            used[j] = True
            matched += 1
            ds, db = max(ds, abs(s[j] - rs[i])), max(db, float(np.abs(b[j] - rb[i]).max()))
    return unmatched, matched, ds, db


def bench_drift(args, device: torch.device) -> None:
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    cases = ["square", "portrait", "large"]
    refs = [torch.load(FIX / f"predict_{c}.pth", weights_only=True) for c in cases]
    options = [("exact (default)", SpeedOptions()), ("fuse", SpeedOptions(fuse=True)),
               ("channels_last", SpeedOptions(channels_last=True)),
               ("fuse+channels_last", SpeedOptions(fuse=True, channels_last=True)),
               ("preprocess=device", SpeedOptions(preprocess="device")),
               ("bf16", SpeedOptions(half="bf16")), ("fuse+bf16", SpeedOptions(fuse=True, half="bf16"))]
    if device.type == "cuda":
        options += [("fp16", SpeedOptions(half=True)),
                    ("fuse+fp16+cuda_graph+device pre", SpeedOptions(fuse=True, half=True, cuda_graph=True,
                                                                     preprocess="device"))]
    print(f"\n## drift on the fixtures ({describe(device)}, TF32 off; fixture tiny weights, reference "
          f"settings; {sum(len(r['scores']) for r in refs)} reference detections on {len(cases)} images)")
    print(f"{'options':<34} {'unmatched@parity':>16} {'matched@IoU0.9':>15} {'max |d score|':>14} {'max |d box| px':>15}")
    model = rtmdet.load(FIX / "weights.pth", device=device)
    for label, opt in options:
        backend = TorchBackend(model, opt)
        rows = []
        for ref in refs:
            img = ref["image_bgr"].numpy()
            with torch.inference_mode():
                det = run_batch(backend, [img], model.test_cfg)[0]
            rows.append(drift(det, ref))
        total = sum(len(r["scores"]) for r in refs)
        print(f"{label:<34} {sum(r[0] for r in rows):>9}/{total:<6} {sum(r[1] for r in rows):>8}/{total:<6} "
              f"{max(r[2] for r in rows):>14.2e} {max(r[3] for r in rows):>15.3f}", flush=True)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=SIZES)
    ap.add_argument("--modes", nargs="+", default=["exact", "fast"], choices=["exact", "fast", "compiled"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--drift", action="store_true", help="also measure each option's drift on the fixtures")
    ap.add_argument("--no-speed", action="store_true", help="only the drift table")
    ap.add_argument("--no-pinned", action="store_true",
                    help="upload from plain arrays, not pinned buffers (what they save)")
    args = ap.parse_args()
    if args.no_pinned:
        TorchBackend._pinned_pool = lambda self: None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if not args.no_speed:
        bench_speed(args, device)
    if args.drift:
        bench_drift(args, device)


if __name__ == "__main__":
    main()
