"""`rtmdet export` for CPU deployment: `--format openvino` and `--int8 --data DIR [--calib N]`.

Kept apart from `cli.py`, which only calls these three hooks: the flags, their validation
before the model loads, and the conversion / quantization after the fp32 ONNX export."""
from __future__ import annotations

from pathlib import Path

from ..cli import UsageError

FORMATS = ("openvino",)  # added to `rtmdet export --format`


def add_cpu_export_args(p) -> None:
    p.add_argument("--int8", action="store_true",
                   help="INT8 post-training quantization (onnx: ONNX Runtime QDQ; openvino: "
                        "NNCF), calibrated on --data")
    p.add_argument("--data", default=None,
                   help="--int8: calibration images (COCO/YOLO dataset or image folder)")
    p.add_argument("--calib", type=int, default=100, help="--int8: calibration images to use")
    p.add_argument("--keep-float", choices=("head", "post", "none"), default="head",
                   help="--int8: float parts (head: prediction convs + decode/NMS; post: "
                        "decode/NMS only; none)")


def wants_cpu_export(args) -> bool:
    return args.format == "openvino" or bool(getattr(args, "int8", False))


def check_cpu_args(args) -> None:
    """One-line UsageErrors before any slow work."""
    if args.format == "openvino":
        from .backends import BackendUnavailable
        from .openvino_backend import import_openvino
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
    from .quantize import calibration_images
    try:
        calibration_images(args.data, 1)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"--data {args.data}: {e}") from None
    if args.calib < 1:
        raise UsageError("--calib must be >= 1")
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
        from .openvino_backend import export_openvino
        if not args.int8:
            return export_openvino(onnx_path, out, half=args.half)
        from .quantize import quantize_openvino
        out = quantize_openvino(onnx_path, out, args.data, calib=args.calib,
                                keep_float=args.keep_float)
    else:
        from .quantize import quantize_onnx
        out = quantize_onnx(onnx_path, out, args.data, calib=args.calib,
                            keep_float=args.keep_float)
    print(f"INT8 ({'NNCF' if args.format == 'openvino' else 'ONNX Runtime QDQ'}), calibrated on "
          f"up to {args.calib} images of {args.data}; float: {args.keep_float}; fp32 ONNX: "
          f"{onnx_path}")
    return out
