"""`rtmdet export` and `rtmdet bench`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UsageError, _model_args, check_model_arg, load_model_arg


def cmd_export(args) -> int:
    from .backends import BackendUnavailable, import_tensorrt
    from .cli_cpu import check_cpu_args, cpu_export_paths, finish_cpu_export, wants_cpu_export
    from .onnx import export_onnx

    src = check_model_arg(args)
    if wants_cpu_export(args):
        check_cpu_args(args)
    if args.format == "engine":
        import torch
        try:
            import_tensorrt()
        except BackendUnavailable as e:
            raise UsageError(f"--format engine: {e}") from None
        if not torch.cuda.is_available():
            raise UsageError("--format engine: TensorRT needs a CUDA GPU; none is available")
    if args.batch < 1:
        raise UsageError("--batch must be >= 1")
    if args.imgsz % 32:
        raise UsageError(f"--imgsz {args.imgsz}: must be a multiple of 32")
    model = load_model_arg(args)
    stem = Path(src).stem if Path(src).suffix else src
    out = Path(args.output) if args.output else Path(f"{stem}.{args.format}")
    onnx_path = out if args.format == "onnx" else out.with_suffix(".onnx")
    if wants_cpu_export(args):
        out, onnx_path = cpu_export_paths(args, stem)
    export_onnx(model, onnx_path, imgsz=args.imgsz, batch=args.batch, dynamic=args.dynamic,
                nms=args.nms, opset=args.opset, half=args.half and args.format != "openvino",
                simplify=args.simplify,
                score_thr=args.score_thr, nms_iou=args.iou, max_det=args.max_det)
    if args.format == "engine":
        from .trt import build_engine
        out = build_engine(onnx_path, out, half=args.half)
    elif wants_cpu_export(args):
        out = finish_cpu_export(args, onnx_path, out)
    print(f"exported {out} ({'dynamic' if args.dynamic else 'static'} "
          f"{args.batch}x3x{args.imgsz}x{args.imgsz}, {'with' if args.nms else 'without'} NMS)")
    return 0


def cmd_bench(args) -> int:
    from .backends import BACKENDS
    from .bench import format_table, run_bench

    src = check_model_arg(args)
    if args.runs < 1 or args.warmup < 0 or args.batch < 1:
        raise UsageError("--runs and --batch must be >= 1, --warmup >= 0")
    if args.imgsz % 32:
        raise UsageError(f"--imgsz {args.imgsz}: must be a multiple of 32")
    load_model_arg(args)  # download/validate once, with a one-line error
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    device = args.device or "cpu"
    rows = run_bench(src, backends, imgsz=args.imgsz, batch=args.batch, runs=args.runs,
                     warmup=args.warmup, device=device, nms=args.nms)
    print(f"{src}: batch {args.batch}, {args.imgsz}x{args.imgsz}, {args.runs} runs after "
          f"{args.warmup} warm-up, device {device}")
    print(format_table(rows, ratios=True))
    return 0


def add_export_parser(sub) -> None:
    from .cli_cpu import FORMATS, add_cpu_export_args
    p = sub.add_parser("export", help="export to ONNX (or a TensorRT engine, an OpenVINO IR)")
    _model_args(p)
    p.add_argument("--format", choices=("onnx", "engine") + FORMATS, default="onnx")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--nms", action="store_true", help="post-processing and NMS inside the graph")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--half", action="store_true",
                   help="float16 weights (GPU runtimes; openvino: f16-compressed IR)")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    p.add_argument("--score-thr", type=float, default=None, help="in-graph NMS: score threshold")
    p.add_argument("--iou", type=float, default=None, help="in-graph NMS: IoU threshold")
    p.add_argument("--max-det", type=int, default=None, help="in-graph NMS: detections per image")
    p.add_argument("--output", default=None, help="output file (default: <model>.onnx|.engine)")
    add_cpu_export_args(p)
    p.set_defaults(func=cmd_export)


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="latency/throughput per backend, side by side")
    _model_args(p)
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt", "all"), default="all")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--nms", action="store_true", help="graph backends: use in-graph NMS")
    p.set_defaults(func=cmd_bench)
