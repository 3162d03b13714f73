"""`rtmdet export`: ONNX (static/dynamic, with or without NMS) or a TensorRT engine."""
from __future__ import annotations

from pathlib import Path

from .common import (UsageError, add_model_args, check_model_arg, image_size, open_model,
                     positive_int, unit_float)


def cmd_export(args) -> int:
    from ..deploy.onnx import export_onnx
    from ..inference import BackendUnavailable
    from ..inference.tensorrt_backend import import_tensorrt

    src = check_model_arg(args)
    if args.format == "engine":
        import torch
        try:
            import_tensorrt()
        except BackendUnavailable as e:
            raise UsageError(f"--format engine: {e}") from None
        if not torch.cuda.is_available():
            raise UsageError("--format engine: TensorRT needs a CUDA GPU; none is available")
    model = open_model(args)
    if not hasattr(model, "cfg"):
        raise UsageError(f"{src} is already an exported model; export from a checkpoint (.pth)")
    stem = Path(src).stem if Path(src).suffix else src
    out = Path(args.output) if args.output else Path(f"{stem}.{args.format}")
    onnx_path = out if args.format == "onnx" else out.with_suffix(".onnx")
    imgsz = args.imgsz or model.test_cfg.imgsz
    try:
        export_onnx(model, onnx_path, imgsz=imgsz, batch=args.batch, dynamic=args.dynamic,
                    nms=args.nms, opset=args.opset, half=args.half, simplify=args.simplify,
                    score_thr=args.score_thr, nms_iou=args.iou, max_det=args.max_det)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.format == "engine":
        from ..deploy.trt import build_engine
        out = build_engine(onnx_path, out, half=args.half)
    print(f"exported {out} ({'dynamic' if args.dynamic else 'static'} "
          f"{args.batch}x3x{imgsz}x{imgsz}, {'with' if args.nms else 'without'} NMS)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX (or a TensorRT engine)")
    add_model_args(p, graphs=False)
    p.add_argument("--format", choices=("onnx", "engine"), default="onnx")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="input size (default: the model's, 640; 1024 for RTMDet-R)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--nms", action="store_true", help="post-processing and NMS inside the graph")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--half", action="store_true", help="float16 weights (GPU runtimes)")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    p.add_argument("--score-thr", type=unit_float, default=None, help="in-graph NMS: score threshold")
    p.add_argument("--iou", type=unit_float, default=None, help="in-graph NMS: IoU threshold")
    p.add_argument("--max-det", type=positive_int, default=None, help="in-graph NMS: detections per image")
    p.add_argument("--output", default=None, help="output file (default: <model>.onnx|.engine)")
    p.set_defaults(func=cmd_export)
