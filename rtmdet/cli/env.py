"""`rtmdet env`: what this installation runs on (versions, devices, optional backends, the
weights cache): the first thing to look at, and to paste into a bug report."""
from __future__ import annotations

import os
import platform
import sys

# optional packages and what they add
OPTIONAL = (("onnx", "ONNX export"), ("onnxruntime", "ONNX Runtime backend"),
            ("onnxruntime-gpu", "ONNX Runtime on CUDA"), ("onnxslim", "export --simplify"),
            ("openvino", "OpenVINO backend"), ("nncf", "OpenVINO INT8"),
            ("tensorrt", "TensorRT engines"), ("pycocotools", "tests only"))


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def report() -> list[tuple[str, str]]:
    """(what, value) rows."""
    import torch

    from .. import __version__
    from ..zoo import cache_dir
    rows = [("rtmdet", f"{__version__} ({os.path.dirname(os.path.dirname(__file__))})"),
            ("python", f"{platform.python_version()} ({sys.platform}, {platform.machine()})"),
            ("CPUs", f"{os.cpu_count()} (torch uses {torch.get_num_threads()} threads)")]
    cuda = torch.version.cuda or "none"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows.append(("torch", f"{torch.__version__} (CUDA {cuda}" + (f", cuDNN {cudnn})" if cudnn else ")")))
    rows.append(("torchvision", _version("torchvision") or "not installed"))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"cuda:{i}", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute {p.major}.{p.minor}"))
    else:
        rows.append(("devices", "cpu only (no CUDA device visible)"))
    cv = _version("opencv-python") or _version("opencv-python-headless") or _version("opencv-contrib-python")
    rows.append(("opencv", cv or "not installed"))
    rows.append(("faster-coco-eval", _version("faster-coco-eval") or "not installed"))
    for dist, what in OPTIONAL:
        v = _version(dist)
        if dist == "onnxruntime-gpu" and v is None:
            continue
        rows.append((dist, f"{v} ({what})" if v else f"not installed ({what})"))
    if _version("onnxruntime") or _version("onnxruntime-gpu"):
        try:
            import onnxruntime
            rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
        except Exception as e:  # a broken install is worth reporting, not a crash
            rows.append(("onnxruntime providers", f"import failed: {e}"))
    cache = cache_dir()
    files = [f for f in cache.rglob("*") if f.is_file()] if cache.is_dir() else []
    size = sum(f.stat().st_size for f in files) / 2**20
    where = " (RTMDET_HOME)" if os.environ.get("RTMDET_HOME") else " (set RTMDET_HOME to move it)"
    rows.append(("weights cache", f"{cache}{where}: {len(files)} file(s), {size:.1f} MiB"))
    return rows


def cmd_env(args) -> int:
    rows = report()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("env", help="versions, devices, optional backends and the weights cache "
                                   "(for bug reports)")
    p.set_defaults(func=cmd_env)
