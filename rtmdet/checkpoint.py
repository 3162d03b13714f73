"""Reading and writing checkpoints safely: no pickled code runs, writes are atomic."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_open


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit the model."""


class OpaqueObject:
    """Stands in for any class a checkpoint names that we do not trust (mmengine's message hub,
    numpy scalars...): it swallows constructor args and state, and never runs their code."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


# exported models: what they are, for the message of a load that was given one
EXPORTED = {".onnx": "an exported ONNX model", ".engine": "a TensorRT engine",
            ".trt": "a TensorRT engine", ".plan": "a TensorRT engine",
            ".xml": "an OpenVINO model", ".bin": "OpenVINO weights", ".tflite": "a TFLite model"}


def _kind_of_bytes(head: bytes) -> str:
    if not head:
        return "an empty file"
    if head.startswith((b"{", b"[")):
        return "a JSON/text file"
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return "a text file"
    return "binary data of another kind"


def _short(e: BaseException) -> str:
    """torch's error without its advice (`weights_only=False` is wrong for an untrusted file)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines if "weights_only" not in ln and "trusted source" not in ln
            and "torch.load" not in ln and "file an issue" not in ln]
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", keep[0]) if keep else type(e).__name__
    return re.split(r"(?<=\.)\s", text)[0][:200]


def not_a_checkpoint(path, reason: str = "") -> CheckpointError:
    """The error for a file that is not a PyTorch checkpoint: what it is, and for an exported
    model where it runs."""
    suffix = Path(str(path)).suffix.lower()
    kind = EXPORTED.get(suffix)
    if kind:
        try:
            from .inference.detector import GRAPH_SUFFIXES
        except ImportError:
            GRAPH_SUFFIXES = {}
        where = (f"run it with rtmdet.Detector({str(path)!r}) or `--weights {path}` in rtmdet "
                 f"predict/val/bench" if suffix in GRAPH_SUFFIXES else "this rtmdet cannot run it")
        return CheckpointError(f"{path} is {kind}, not a PyTorch checkpoint: {where} (training and "
                               f"export start from the .pth checkpoint it was made from)")
    return CheckpointError(f"{path}: not a PyTorch checkpoint ({reason})")


def safe_load(path: str | os.PathLike, map_location="cpu") -> Any:
    """`torch.load(weights_only=True)`; globals the allow-list lacks become `OpaqueObject`s.
    A file that is not a checkpoint (an exported model, text, random bytes) is a one-line
    CheckpointError saying what it is not, never torch's advice to unpickle it unsafely."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None
    # torch's two formats: a zip archive (torch >= 1.6) or a pickle stream (protocol >= 2)
    if Path(path).suffix.lower() in EXPORTED or not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise not_a_checkpoint(path, _kind_of_bytes(head))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as first:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            raise not_a_checkpoint(path, f"unreadable: {_short(first)}") from None
        stubs = [(type(n.rsplit(".", 1)[-1], (OpaqueObject,), {}), n) for n in names]
        try:
            with torch.serialization.safe_globals(stubs):
                return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise not_a_checkpoint(path, f"unreadable: {_short(e)}") from None
    except Exception as e:  # truncated archives, foreign zips, corrupt pickles
        raise not_a_checkpoint(path, f"unreadable: {_short(e)}") from None


def extract_state_dict(ckpt: Any) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint (official or ours), 'module.' prefixes removed."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        sd = ckpt["state_dict"]
    elif isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        sd = ckpt["model"]
    elif isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt
    else:
        raise CheckpointError("checkpoint holds no state_dict")
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_compatible(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "",
                     ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Raise CheckpointError naming the keys that are missing, unexpected or of another shape."""
    own = model.state_dict()
    skip = lambda k: any(k.startswith(p) for p in ignore_prefixes)  # noqa: E731
    missing = [k for k in own if k not in state_dict and not skip(k)]
    unexpected = [k for k in state_dict if k not in own and not skip(k)]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and not skip(k) and own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        def fmt(title, items):
            if not items:
                return ""
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            return f"\n  {title} ({len(items)}): " + "; ".join(items[:5]) + more
        raise CheckpointError(
            f"checkpoint {source} does not fit this model ({type(model).__name__}):"
            + fmt("shape mismatch", shapes) + fmt("missing", missing) + fmt("unexpected", unexpected))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`
    (`rtmdet.atomic`): a full disk or a read-only folder raises `WriteError` naming `path` and
    leaves the previous file untouched. The file gets the user's umask (0644 typical)."""
    with atomic_open(path) as f:
        torch.save(obj, f)
