"""CPU deployment: PyTorch vs ONNX Runtime vs OpenVINO, fp32 and INT8 - speed and accuracy.

    python benchmarks/bench_cpu_deploy.py [--models rtmdet-tiny rtmdet-s] [--imgsz 640]
        [--runs 20] [--warmup 3] [--calib 32] [--data DIR] [--shapes RUN_DIR] [--exclusions]

1. Speed (random weights, batch 1, `--imgsz`): median ms of pre-processing + inference +
   post-processing ("total") and of inference alone per backend, with ratios vs ONNX Runtime
   fp32. The backends are timed round-robin (one run of each in turn, with a pause between
   them so ONNX Runtime's spinning threads do not slow the next one), so load from other
   processes on a shared CPU hits all of them alike. INT8 models are calibrated on `--calib`
   images of `--data` (default: generated shapes images). The random head is spread
   (`spread_head`): almost every (prior, class) pair passes score_thr 0.001 with a real box, so
   post-processing costs more than with trained weights (see bench_deploy.py; before 2026-11-27
   plain random init left NMS no box).
2. Fixture accuracy (needs ../shared/fixtures): the reference tiny weights on the three fixture
   images at `--imgsz`, each backend vs PyTorch fp32: detections matched exactly (label, score
   within 1e-4, box within 0.01 px), and for INT8 the share of PyTorch's top-100 detections found
   (same label, IoU >= 0.5) with the median |score drift|. The weights are random: scores are
   nearly tied, so this measures closeness, not accuracy.
3. AP (`--shapes RUN_DIR`: a run of `rtmdet demo`-style training with RUN_DIR/data (COCO shapes,
   train + val splits) and RUN_DIR/train/best.pth): COCO AP on the val split per backend at the
   training size; INT8 calibrated on the train split. `--exclusions` also quantizes with
   keep_float "post" and "none" (see rtmdet/deploy/quantize.py) and reports their AP / fixture
   agreement.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import rtmdet
from rtmdet.api import checkpoint_meta
from rtmdet.inference import Detector, resolve_test_cfg
from rtmdet.deploy.bench import bench_images, spread_head, time_stages
from rtmdet.deploy.onnx import export_onnx
from rtmdet.deploy.openvino import export_openvino
from rtmdet.inference.openvino_backend import OpenVINOBackend
from rtmdet.deploy.quantize import quantize_onnx, quantize_openvino

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "rtmdet_tiny_8xb32-300e_coco"
REF = "onnxruntime fp32"


def build_backends(model, ckpt: Path, imgsz: int, work: Path, data: Path, calib: int,
                   keep_float=("head",), extra=True) -> dict[str, Detector]:
    """name -> Detector: torch, ORT/OpenVINO fp32, ORT/OpenVINO INT8 (per keep_float level)."""
    onnx_path = export_onnx(model, work / "fp32.onnx", imgsz=imgsz)
    xml = export_openvino(onnx_path, work / "fp32.xml")
    dets = {"torch fp32": Detector(str(ckpt)), REF: Detector(onnx_path),
            "openvino fp32": Detector(xml)}
    if extra:  # OpenVINO's default on CPUs with bf16 units (AVX512_BF16 / AMX)
        bf16 = Detector(xml)
        bf16.backend = OpenVINOBackend(str(xml), "cpu", precision="bf16")
        dets["openvino bf16"] = bf16
    for k in keep_float:
        tag = "" if k == "head" else f" (float: {k})"
        t0 = time.perf_counter()
        q = quantize_onnx(onnx_path, work / f"int8_{k}.onnx", data, calib=calib, keep_float=k)
        t1 = time.perf_counter()
        qx = quantize_openvino(onnx_path, work / f"int8_{k}.xml", data, calib=calib, keep_float=k)
        t2 = time.perf_counter()
        print(f"  quantized (keep float: {k}): onnxruntime {t1 - t0:.0f} s, nncf {t2 - t1:.0f} s")
        dets[f"onnxruntime int8{tag}"] = Detector(q)
        dets[f"openvino int8{tag}"] = Detector(qx)
        if extra and k == "head":  # OpenVINO reading ONNX Runtime's QDQ file
            qdq = Detector(xml)
            qdq.backend = OpenVINOBackend(str(q), "cpu")
            dets["openvino on ORT-QDQ"] = qdq
    return dets


# --------------------------------------------------------------------------------- speed
# ONNX Runtime's intra-op threads spin-wait for a while after a run; the next backend timed
# straight after would share the cores with them (measured: OpenVINO 126 ms right after an ORT
# run, 95 ms after a 50 ms pause). A pause between backends keeps the round-robin fair.
PAUSE_S = 0.1


def time_backends(dets: dict[str, Detector], images, imgsz: int, runs: int, warmup: int):
    times = {n: {"pre": [], "infer": [], "post": []} for n in dets}
    for i in range(warmup + runs):
        for name, det in dets.items():  # round-robin
            time.sleep(PAUSE_S)
            stages = time_stages(det, images, imgsz, resolve_test_cfg(det.test_cfg, imgsz=imgsz))
            if i >= warmup:
                for k, v in zip(("pre", "infer", "post"), stages):
                    times[name][k].append(v)
    return times


def speed_table(times) -> str:
    med = {n: {k: statistics.median(v) * 1e3 for k, v in t.items()} for n, t in times.items()}
    for m in med.values():
        m["total"] = m["pre"] + m["infer"] + m["post"]
    ref = med[REF]
    lines = [f"{'backend':32s} {'pre':>6s} {'infer':>7s} {'post':>6s} {'total':>7s}  "
             f"{'total vs ORT fp32':>17s}  {'infer vs ORT fp32':>17s}"]
    for n, m in med.items():
        lines.append(f"{n:32s} {m['pre']:6.1f} {m['infer']:7.1f} {m['post']:6.1f} "
                     f"{m['total']:7.1f}  {ref['total'] / m['total']:16.2f}x  "
                     f"{ref['infer'] / m['infer']:16.2f}x")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- accuracy
def exact_unmatched(d, r, score_tol=1e-4, box_tol=1e-2) -> int:
    """Reference detections without an equal one (label, score, box within tolerances)."""
    used = np.zeros(len(d), bool)
    db, ds, dl = (np.asarray(t, np.float64) for t in (d.boxes, d.scores, d.labels))
    miss = 0
    for b, s, lab in zip(np.asarray(r.boxes, np.float64), np.asarray(r.scores, np.float64),
                         np.asarray(r.labels)):
        ok = (~used) & (dl == lab) & (np.abs(ds - s) <= score_tol) & \
            (np.abs(db - b).max(1) <= box_tol) if len(d) else np.zeros(0, bool)
        j = np.flatnonzero(ok)
        if len(j):
            used[j[0]] = True
        else:
            miss += 1
    return miss


def agreement(ref, dets, top=100) -> tuple[float, float]:
    from torchvision.ops import box_iou
    found, drift = [], []
    for r, d in zip(ref, dets):
        if len(d) == 0:
            found.append(torch.zeros(min(top, len(r)), dtype=torch.bool))
            continue
        iou = box_iou(r.boxes[:top], d.boxes) * (r.labels[:top, None] == d.labels[None])
        best, j = iou.max(1)
        found.append(best >= 0.5)
        drift.append((r.scores[:top] - d.scores[j]).abs()[best >= 0.5])
    drift = torch.cat(drift) if drift else torch.zeros(0)
    return torch.cat(found).float().mean().item(), (drift.median().item() if len(drift) else
                                                    float("nan"))


def fixture_accuracy(imgsz: int, work: Path, data: Path, calib: int, keep_float) -> str:
    if not (FIXTURES / "weights.pth").is_file():
        return "fixture accuracy: skipped (no ../shared/fixtures)"
    imgs = [torch.load(FIXTURES / f"predict_{n}.pth", weights_only=True)["image_bgr"].numpy()
            for n in ("square", "portrait", "large")]
    model = rtmdet.load(FIXTURES / "weights.pth")
    dets = build_backends(model, FIXTURES / "weights.pth", imgsz, work, data, calib, keep_float,
                          extra=False)
    ref = dets.pop("torch fp32").predict(imgs, imgsz=imgsz)
    lines = [f"fixture tiny weights (random), 3 images at {imgsz}, vs PyTorch fp32 "
             f"({sum(len(r) for r in ref)} detections):",
             f"{'backend':32s} {'exact unmatched':>15s} {'top-100 found':>13s} {'median drift':>12s}"]
    for name, det in dets.items():
        out = det.predict(imgs, imgsz=imgsz)
        miss = sum(exact_unmatched(d, r) for d, r in zip(out, ref))
        found, drift = agreement(ref, out)
        lines.append(f"{name:32s} {miss:15d} {100 * found:12.1f}% {drift:12.5f}")
    return "\n".join(lines)


def shapes_ap(run: Path, work: Path, calib: int, keep_float, max_val: int | None = None) -> str:
    from rtmdet.data.datasets import load_dataset
    from rtmdet.eval.validate import evaluate_model

    ckpt = run / "train" / "best.pth"
    if not ckpt.is_file():
        return f"AP: skipped ({ckpt} not found)"
    model = rtmdet.load(ckpt)
    imgsz = model.test_cfg.imgsz
    data = run / "data"
    val = load_dataset(data, split="val")
    val.records = val.records[:max_val]
    dets = build_backends(model, ckpt, imgsz, work, data, calib, keep_float)
    lines = [f"COCO AP on {len(val)} val images of {run} (trained rtmdet-tiny, {imgsz}px; INT8 "
             f"calibrated on {calib} train images):",
             f"{'backend':32s} {'AP':>6s} {'AP50':>6s} {'dAP vs torch':>12s}"]
    ref = None
    for name, det in dets.items():
        m, _ = evaluate_model(det, val, batch_size=1, progress=False, imgsz=imgsz)
        m = det.family.summary(m)
        ref = m["AP"] if ref is None else ref
        lines.append(f"{name:32s} {100 * m['AP']:6.2f} {100 * m['AP50']:6.2f} "
                     f"{100 * (m['AP'] - ref):+12.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["rtmdet-tiny", "rtmdet-s"])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--data", default=None, help="calibration images (default: generated)")
    ap.add_argument("--shapes", default=None, help="trained shapes run dir for AP")
    ap.add_argument("--val-images", type=int, default=None, help="AP: first N val images")
    ap.add_argument("--exclusions", action="store_true", help="also keep_float post / none")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-fixtures", action="store_true", help="no fixture-accuracy table")
    args = ap.parse_args()
    import onnxruntime
    import openvino
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
          f"{onnxruntime.__version__}, openvino {openvino.__version__}, batch 1, CPU")
    keep = ("head", "post", "none") if args.exclusions else ("head",)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = Path(args.data) if args.data else None
        if data is None:
            from rtmdet.data.synthetic import make_shapes_dataset
            make_shapes_dataset(tmp / "calib", num_images=args.calib, image_size=(480, 640),
                                split="train", seed=1)
            data = tmp / "calib"
        if not args.skip_speed:
            images = bench_images(1)
            for name in args.models:
                torch.manual_seed(0)
                model = spread_head(rtmdet.create(name))
                work = tmp / name
                work.mkdir()
                ckpt = work / "model.pth"
                torch.save({"meta": checkpoint_meta(model), "state_dict": model.state_dict()}, ckpt)
                print(f"\n{name} (random weights), {args.imgsz}x{args.imgsz}, median of "
                      f"{args.runs} round-robin runs after {args.warmup}, ms:")
                dets = build_backends(model, ckpt, args.imgsz, work, data, args.calib)
                print(speed_table(time_backends(dets, images, args.imgsz, args.runs,
                                                args.warmup)))
        if not args.skip_fixtures:
            (tmp / "fix").mkdir()
            print("\n" + fixture_accuracy(args.imgsz, tmp / "fix", data, args.calib, keep))
        if args.shapes:
            (tmp / "ap").mkdir()
            print("\n" + shapes_ap(Path(args.shapes), tmp / "ap", args.calib, keep,
                                    args.val_images))


if __name__ == "__main__":
    main()
