"""`rtmdet bench`: pre / infer / post latency per backend, side by side."""
from __future__ import annotations

from pathlib import Path

from .common import UsageError, add_model_args, check_model_arg, image_size, non_negative_int, open_model, positive_int


def cmd_bench(args) -> int:
    from ..deploy.bench import format_table, run_bench
    from ..inference import BACKENDS
    from ..inference.detector import GRAPH_SUFFIXES

    src = check_model_arg(args)
    model = open_model(args)  # download/validate once, with a one-line error
    imgsz = args.imgsz or model.test_cfg.imgsz  # default: the size the checkpoint carries
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    kind = GRAPH_SUFFIXES.get(Path(src).suffix.lower())
    if kind is not None:  # an exported file: its own backend (the others need the .pth)
        if args.backend not in ("all", kind):
            raise UsageError(f"{src} runs on {kind}; for --backend {args.backend} bench the .pth "
                             "checkpoint it was exported from")
        backends = (kind,)
    device = args.device or "cpu"
    rows = run_bench(src, backends, imgsz=imgsz, batch=args.batch, runs=args.runs,
                     warmup=args.warmup, device=device, nms=args.nms)
    print(f"{src}: batch {args.batch}, {imgsz}x{imgsz}, {args.runs} runs after "
          f"{args.warmup} warm-up, device {device}")
    print(format_table(rows, ratios=True))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="latency/throughput per backend, side by side")
    add_model_args(p, device_default="cpu; TensorRT always runs on cuda")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "openvino", "tensorrt", "all"), default="all")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="input size (default: the checkpoint's test size)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument("--warmup", type=non_negative_int, default=3)
    p.add_argument("--nms", action="store_true", help="graph backends: use in-graph NMS")
    p.set_defaults(func=cmd_bench)
