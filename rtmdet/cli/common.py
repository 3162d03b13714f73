"""What every sub-command shares: one-line usage errors, argument types that validate at the
boundary, the model/weights/device arguments, and opening a model on any backend."""
from __future__ import annotations

import argparse
from pathlib import Path


class UsageError(Exception):
    """A bad argument: printed as one line, exit code 2."""


# ------------------------------------------------------------------ argument types
def number(cast, ok, rule):
    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {cast.__name__}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text}: must be {rule}")
        return v
    parse.__name__ = cast.__name__
    return parse


positive_int = number(int, lambda v: v >= 1, ">= 1")
non_negative_int = number(int, lambda v: v >= 0, ">= 0")
unit_float = number(float, lambda v: 0 <= v <= 1, "between 0 and 1")
image_size = number(int, lambda v: v >= 32 and v % 32 == 0, "a positive multiple of 32")
opset_version = number(int, lambda v: 11 <= v <= 20, "between 11 and 20")  # NMS needs >= 11
positive_float = number(float, lambda v: v > 0 and v != float("inf"), "> 0")
tile_size = number(int, lambda v: v >= 32, ">= 32")


# ------------------------------------------------------------------ device and model
def device(name: str | None) -> str:
    """The device to use: the one asked for (checked), else cuda when present, else cpu."""
    import torch
    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return name


def add_model_args(p: argparse.ArgumentParser, graphs: bool = True,
                   device_default: str = "cuda if available") -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="zoo name (see `rtmdet models`), downloaded once and cached")
    g.add_argument("--weights", help="checkpoint (.pth)" + (" or exported model (.onnx, .engine)"
                                                          if graphs else ""))
    p.add_argument("--device", default=None, help=f"cpu, cuda, cuda:1 (default: {device_default})")


def add_tile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", type=tile_size, default=None,
                   help="tiled inference for large images: windows of TILE px (e.g. 1024), each "
                        "letterboxed to --imgsz, merged with the model's NMS")
    p.add_argument("--overlap", type=non_negative_int, default=200,
                   help="overlap of neighbouring tiles in px (default 200)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation as the reference's rtmdet_tta.py: 3 scales x "
                        "flip, merged by NMS (detection models; six 1.5x-size views: ~13x the work)")


def tile_knobs(args) -> dict:
    """{tile, overlap} (or {tta}) for predict(); --overlap must be smaller than --tile."""
    if getattr(args, "tta", False):
        if args.tile is not None:
            raise UsageError("--tta and --tile do not combine: choose one")
        return {"tta": True}
    if args.tile is None:
        return {}
    if args.overlap >= args.tile:
        raise UsageError(f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
    return dict(tile=args.tile, overlap=args.overlap)


def check_inference(model, knobs: dict) -> None:
    """What the model cannot do with these knobs (a static graph at another --imgsz, --tta on
    a mask or rotated model or a static graph): a UsageError before any image is read."""
    from ..inference.tta import check_tta
    backend = getattr(model, "backend", model)
    try:
        if hasattr(backend, "input_size"):
            backend.input_size(knobs.get("imgsz"))
        if knobs.get("tta"):
            check_tta(backend, knobs.get("imgsz"))
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_model_arg(args) -> str:
    """--model NAME or --weights PATH, validated before any slow work; returns the source."""
    from ..presets import RECORDS, is_model_name
    src = getattr(args, "weights", None) or getattr(args, "model", None)
    if not src:
        raise UsageError("give --model NAME or --weights PATH")
    if getattr(args, "weights", None) and not Path(args.weights).is_file():
        raise UsageError(f"weights file not found: {args.weights}")
    if not getattr(args, "weights", None) and not is_model_name(src):
        raise UsageError(f"unknown model {src!r}; known: {', '.join(RECORDS)}")
    return src


def add_speed_args(p) -> None:
    """The PyTorch inference speed options (`rtmdet.inference.speed.SpeedOptions`)."""
    g = p.add_argument_group("speed (PyTorch checkpoints; docs/speed.md lists what each changes)")
    g.add_argument("--half", nargs="?", const="fp16", choices=("fp16", "bf16"), default=None,
                   help="fp16 (or bf16) weights and activations, channels-last on CUDA")
    g.add_argument("--no-fuse", action="store_true",
                   help="the exact path: BatchNorm kept separate and, on the CPU, NCHW (default: "
                        "BN folded into the convs, and channels-last on the CPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the network")
    g.add_argument("--cuda-graph", action="store_true",
                   help="replay a captured CUDA graph per input shape (CUDA only)")
    g.add_argument("--device-preprocess", action="store_true",
                   help="letterbox on the device (GPU) instead of with OpenCV on the CPU")


def speed_kwargs(args) -> dict:
    return dict(fuse=not args.no_fuse, half=args.half or False, compile=args.compile,
                cuda_graph=args.cuda_graph, preprocess="device" if args.device_preprocess else "cpu")


def open_model(args):
    """--model / --weights -> a PyTorch model, or a `Detector` for an exported graph (a
    `Detector` for every source when the command has the speed options); a one-line UsageError
    for anything that cannot be opened."""
    from ..checkpoint import CheckpointError
    from ..inference import BackendUnavailable, Detector
    from ..zoo import DownloadError
    src = check_model_arg(args)
    dev = device(getattr(args, "device", None))
    try:
        if hasattr(args, "no_fuse"):
            return Detector(src, device=dev, **speed_kwargs(args))
        from ..api import open_model as open_source
        return open_source(src, dev)
    except (CheckpointError, DownloadError, FileNotFoundError, BackendUnavailable, ValueError) as e:
        raise UsageError(str(e)) from None

