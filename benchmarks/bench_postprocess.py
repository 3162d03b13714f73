"""Post-processing speed: the original per-image path vs the batched early-stopping one.

    python benchmarks/bench_postprocess.py [--weights W] [--runs 5] [--old-runs 2] [--threads N]
                                           [--device cuda] [--batches 1 8] [--no-paths]

Fixture tiny weights (random, so every score lies in (0.001, 0.3): ~90000 candidates per image
reach NMS at the reference settings), the three fixture images (cycled to fill batch 8), input
640x640. For batch 1 and batch 8 at score_thr 0.001 (reference settings) and 0.3: network
forward, old post-processing (the original algorithm, `postprocess_single_reference`), new
post-processing (`ops.postprocess.postprocess_batch` on the batch; and `postprocess_single` image
by image, as `RTMDet.postprocess` calls it), and the ratios. "whole/fwd" = (forward + post) /
forward. Times are the median of the runs (min in brackets); the machine may be shared, so
absolute numbers are noisy.

Then the batched path on the decoded outputs (`postprocess_decoded_batch`, what `predict` runs)
at the reference IoU threshold and at 0.3 (more blocks of the search), with its tensor operations
(each a kernel launch on a GPU) and host syncs counted by `rtmdet.deploy.bench.OpCounter` the
way a GPU runs the search (fixed-size lists under masks, `ops.nms.compact_lists`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

import rtmdet
import rtmdet.ops.nms as nms
import rtmdet.ops.postprocess as pp
from rtmdet.deploy.bench import OpCounter
from rtmdet.ops.boxes import grid_priors, level_sizes
from rtmdet.ops.postprocess import postprocess_batch, postprocess_single
from rtmdet.ops.postprocess import postprocess_single_reference as old_postprocess_single

SHARED = Path(os.environ.get("RTMDET_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
FIX = SHARED / "fixtures" / "rtmdet_tiny_8xb32-300e_coco"


# ---- the baseline: `ops.postprocess.postprocess_single_reference`, the original per-image path
def compare(old_out, new_out) -> str:
    """'identical', or how the outputs differ: the new path may order exactly equal scores
    differently (the old one merged the per-class lists with an unstable sort)."""
    reordered = 0
    for o, n in zip(old_out, new_out):
        o_scores, o_labels, o_inds = o.scores, o.labels, o.prior_inds
        if torch.equal(o_inds, n.prior_inds) and torch.equal(o_labels, n.labels):
            continue
        same_set = sorted(zip(o_inds.tolist(), o_labels.tolist())) == \
            sorted(zip(n.prior_inds.tolist(), n.labels.tolist()))
        if not (same_set and torch.equal(o_scores, n.scores)):
            return "DIFFERENT detections"
        reordered += int(((o_inds != n.prior_inds) | (o_labels != n.labels)).sum())
    return "identical" if not reordered else f"same; {reordered} equal-score dets ordered differently"


# ---- timing ---------------------------------------------------------------------------------
def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, runs: int, warmup: int = 1):
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(runs):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, min(times) * 1e3, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(FIX / "weights.pth"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--old-runs", type=int, default=2, help="runs of the (slow) old path")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (TF32 off: the fp32 network)")
    ap.add_argument("--no-paths", action="store_true", help="skip the op and sync counts")
    ap.add_argument("--profile", action="store_true",
                    help="also the torch.profiler table of the batched path, reference settings")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = rtmdet.load(args.weights, device=args.device).eval()
    cases = ["square", "portrait", "large"]
    imgs = [torch.load(FIX / f"predict_{c}.pth", weights_only=True)["image_bgr"].numpy() for c in cases]
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; fixture tiny weights; "
          f"median [min] ms of {args.runs} runs ({args.old_runs} for the old path)")
    print(f"{'batch':>5} {'score_thr':>9} {'forward':>15} {'old post':>17} {'new post':>15} "
          f"{'new per-image':>15} {'old/new':>8} {'old whole/fwd':>13} {'new whole/fwd':>13} "
          f"{'new post/whole':>14}")
    for bsz in args.batches:
        chunk = [imgs[i % len(imgs)] for i in range(bsz)]
        with torch.inference_mode():
            x, metas = model.preprocess(chunk)
            fwd_med, fwd_min, out = timed(lambda: model(x), args.runs)
            cls, reg = out[0], out[1]
            priors = grid_priors([c.shape[-2:] for c in cls], model.cfg.strides, cls[0].dtype, cls[0].device)
            shapes = [m.img_shape for m in metas]
            factors = [m.scale_factor for m in metas]
            for thr in (0.001, 0.3):
                cfg = dataclasses.replace(model.test_cfg, score_thr=thr)
                old = lambda: [old_postprocess_single([c[i] for c in cls], [b[i] for b in reg], priors,
                                                      shapes[i], factors[i], cfg) for i in range(bsz)]
                new = lambda: postprocess_batch(cls, reg, priors, shapes, factors, cfg)
                loop = lambda: [postprocess_single([c[i] for c in cls], [b[i] for b in reg], priors,
                                                   shapes[i], factors[i], cfg) for i in range(bsz)]
                old_med, old_min, old_out = timed(old, args.old_runs, warmup=0 if thr < 0.01 else 1)
                new_med, new_min, new_out = timed(new, args.runs)
                loop_med, loop_min, _ = timed(loop, args.runs)
                note = compare(old_out, new_out)
                print(f"{bsz:>5} {thr:>9} {fwd_med:>8.1f} [{fwd_min:>4.0f}] {old_med:>9.1f} [{old_min:>5.0f}] "
                      f"{new_med:>7.1f} [{new_min:>5.1f}] {loop_med:>7.1f} [{loop_min:>5.1f}] "
                      f"{old_med / new_med:>7.1f}x "
                      f"{(fwd_med + old_med) / fwd_med:>12.2f}x {(fwd_med + new_med) / fwd_med:>12.2f}x "
                      f"{new_med / (fwd_med + new_med):>13.1%}  {note}")
    if not args.no_paths:
        compare_paths(model, imgs, args.batches, args.runs)
    if args.profile:
        profile_paths(model, imgs, args.batches)


def decoded_batch(model, imgs, bsz: int):
    """The decoded outputs of `bsz` images (the fixture images cycled), the level sizes and the
    scale factors: what `postprocess_decoded_batch` takes."""
    x, metas = model.preprocess([imgs[i % len(imgs)] for i in range(bsz)])
    out = model.decode(model(x), tuple(x.shape[-2:]))
    return out, level_sizes(*metas[0].img_shape, model.cfg.strides), [m.scale_factor for m in metas]


def compare_paths(model, imgs, batches, runs: int) -> None:
    """The block-wise search on a decoded batch: time, kernel launches, host syncs."""
    print(f"\n{'batch':>5} {'score_thr':>9} {'iou':>5} {'ms':>9} {'ops':>5} {'syncs':>5}  (counted the GPU's way)")
    for bsz in batches:
        with torch.inference_mode():
            out, sizes, factors = decoded_batch(model, imgs, bsz)
            for thr, iou in ((0.001, model.test_cfg.nms_iou), (0.001, 0.3), (0.3, model.test_cfg.nms_iou)):
                cfg = dataclasses.replace(model.test_cfg, score_thr=thr, nms_iou=iou)
                run = lambda: pp.postprocess_decoded_batch(out["boxes"], out["scores"], sizes, factors, cfg)
                med, _, _ = timed(run, runs)
                with mock.patch.object(nms, "compact_lists", lambda t: False), OpCounter() as c:
                    run()
                print(f"{bsz:>5} {thr:>9} {iou:>5} {med:>9.2f} {c.kernels:>5} {c.syncs:>5}")


def profile_paths(model, imgs, batches, rows: int = 15) -> None:
    """Where the batched path's time goes at the reference settings: wall time against the
    device's busy time, and the operators that take most of either."""
    from torch.profiler import ProfilerActivity, profile
    cuda = next(model.parameters()).is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for bsz in batches:
        with torch.inference_mode():
            out, sizes, factors = decoded_batch(model, imgs, bsz)
            run = lambda: pp.postprocess_decoded_batch(out["boxes"], out["scores"], sizes, factors,
                                                       model.test_cfg)
            timed(run, 2)
            sync()
            t = time.perf_counter()
            with profile(activities=activities) as prof:
                run()
                sync()
            wall = (time.perf_counter() - t) * 1e3
        events = prof.key_averages()
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        busy = sum(getattr(e, key) for e in events) / 1e3
        print(f"\n## profile, batch {bsz}, reference settings: {wall:.2f} ms wall (profiled), "
              f"{busy:.2f} ms {'GPU busy' if cuda else 'CPU self time'}")
        print(events.table(sort_by=key, row_limit=rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
