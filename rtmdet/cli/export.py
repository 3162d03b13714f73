"""`rtmdet export`: ONNX (static/dynamic, with or without NMS), an OpenVINO IR, a TensorRT
engine; `--int8 --data DIR` quantizes for CPU runtimes (ONNX Runtime QDQ, OpenVINO NNCF)."""
from __future__ import annotations

from pathlib import Path

from .common import (UsageError, add_model_args, check_model_arg, image_size, open_model, opset_version,
                     positive_int, unit_float)


def cmd_export(args) -> int:
    from ..atomic import ensure_dir
    from ..deploy.onnx import export_onnx
    from ..inference import BackendUnavailable
    from ..inference.tensorrt_backend import import_tensorrt

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
    stem = Path(src).stem if Path(src).suffix else src
    out = Path(args.output) if args.output else Path(f"{stem}.{args.format}")
    if out.is_dir():  # a folder: the file goes inside it
        out = out / f"{stem}.{args.format}"
    ensure_dir(out.parent)  # an unwritable place is found before the export runs
    model = open_model(args)
    if not hasattr(model, "cfg"):
        raise UsageError(f"{src} is already an exported model; export from a checkpoint (.pth)")
    imgsz = args.imgsz or model.test_cfg.imgsz  # the size the checkpoint was trained for
    onnx_path = out if args.format == "onnx" else out.with_suffix(".onnx")
    if wants_cpu_export(args):
        out, onnx_path = cpu_export_paths(args, stem)
    try:
        export_onnx(model, onnx_path, imgsz=imgsz, batch=args.batch, dynamic=args.dynamic,
                    nms=args.nms, opset=args.opset, half=args.half and args.format != "openvino",
                    simplify=args.simplify,
                    score_thr=args.score_thr, nms_iou=args.iou, max_det=args.max_det)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.format == "engine":
        from ..deploy.trt import build_engine
        out = build_engine(onnx_path, out, half=args.half)
    elif wants_cpu_export(args):
        out = finish_cpu_export(args, onnx_path, out)
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    print(f"exported {out} ({'dynamic' if args.dynamic else 'static'} "
          f"{args.batch}x3x{h}x{w}, {'with' if args.nms else 'without'} NMS)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX, an OpenVINO IR or a TensorRT engine")
    add_model_args(p, graphs=False)
    p.add_argument("--format", choices=("onnx", "openvino", "engine"), default="onnx")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="input size (default: the checkpoint's test size: 640 for COCO zoo "
                        "models, 1024 for RTMDet-R)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--nms", action="store_true", help="post-processing and NMS inside the graph")
    p.add_argument("--opset", type=opset_version, default=17)
    p.add_argument("--half", action="store_true",
                   help="float16 weights (GPU runtimes; openvino: f16-compressed IR)")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    p.add_argument("--score-thr", type=unit_float, default=None, help="in-graph NMS: score threshold")
    p.add_argument("--iou", type=unit_float, default=None, help="in-graph NMS: IoU threshold")
    p.add_argument("--max-det", type=positive_int, default=None, help="in-graph NMS: detections per image")
    p.add_argument("--output", default=None,
                   help="output file (default: ./<model>.onnx|.xml|.engine; a folder: the file goes in it)")
    p.add_argument("--int8", action="store_true",
                   help="INT8 post-training quantization (onnx: ONNX Runtime QDQ; openvino: "
                        "NNCF), calibrated on --data")
    p.add_argument("--data", default=None,
                   help="--int8: calibration images (COCO/YOLO dataset or image folder)")
    p.add_argument("--calib", type=positive_int, default=100, help="--int8: calibration images to use")
    p.add_argument("--keep-float", choices=("head", "post", "none"), default="head",
                   help="--int8: float parts (head: prediction convs + decode/NMS; post: "
                        "decode/NMS only; none)")
    p.set_defaults(func=cmd_export)


# ------------------------------------------------------------------ CPU formats (openvino, int8)
def wants_cpu_export(args) -> bool:
    return args.format == "openvino" or bool(getattr(args, "int8", False))


def check_cpu_args(args) -> None:
    """One-line UsageErrors before any slow work."""
    if args.format == "openvino":
        from ..inference import BackendUnavailable
        from ..inference.openvino_backend import import_openvino
        try:
            import_openvino()
        except BackendUnavailable as e:
            raise UsageError(f"--format openvino: {e}") from None
        if args.output and Path(args.output).suffix != ".xml":
            raise UsageError(f"--output {args.output}: an OpenVINO IR path ends in .xml")
    if not args.int8:
        return
    if args.format not in ("onnx", "openvino"):
        raise UsageError("--int8 is for --format onnx or openvino")
    if args.half:
        raise UsageError("--int8 and --half exclude each other")
    if not args.data:
        raise UsageError("--int8 needs --data DIR (calibration images)")
    from ..deploy.quantize import calibration_images
    try:
        calibration_images(args.data, 1)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"--data {args.data}: {e}") from None
    try:
        if args.format == "openvino":
            import nncf  # noqa: F401
        else:
            import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        raise UsageError(f"--int8: {e.name} is not installed (pip install "
                         f"'rtmdet[{'openvino' if args.format == 'openvino' else 'onnx'}]')") from None


def cpu_export_paths(args, stem: str) -> tuple[Path, Path]:
    """(final output, fp32 ONNX written first). Defaults: <stem>.xml, <stem>_int8.xml,
    <stem>_int8.onnx; the fp32 ONNX is <stem>.onnx (with --output: next to it)."""
    ext = ".xml" if args.format == "openvino" else ".onnx"
    out = Path(args.output) if args.output else Path(f"{stem}{'_int8' if args.int8 else ''}{ext}")
    fp32 = out.with_suffix(".onnx") if args.output else Path(f"{stem}.onnx")
    if fp32 == out:
        fp32 = out.with_name(f"{out.stem}_fp32.onnx")
    return out, fp32


def finish_cpu_export(args, onnx_path: Path, out: Path) -> Path:
    """fp32 ONNX -> OpenVINO IR and/or INT8; returns the file written."""
    if args.format == "openvino":
        from ..deploy.openvino import export_openvino
        if not args.int8:
            return export_openvino(onnx_path, out, half=args.half)
        from ..deploy.quantize import quantize_openvino
        out = quantize_openvino(onnx_path, out, args.data, calib=args.calib,
                                keep_float=args.keep_float)
    else:
        from ..deploy.quantize import quantize_onnx
        out = quantize_onnx(onnx_path, out, args.data, calib=args.calib,
                            keep_float=args.keep_float)
    print(f"INT8 ({'NNCF' if args.format == 'openvino' else 'ONNX Runtime QDQ'}), calibrated on "
          f"up to {args.calib} images of {args.data}; float: {args.keep_float}; fp32 ONNX: "
          f"{onnx_path}")
    return out

