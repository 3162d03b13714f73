"""OpenVINO: convert our ONNX export to an OpenVINO IR (.xml + .bin) and run it behind `Detector`.

Design choices
--------------
* The IR is converted from the ONNX export (`export_onnx`), not traced from PyTorch again, so the
  graph (normalization inside, decode, optional NMS, mask outputs) is exactly the one the ONNX
  Runtime backend runs and `_GraphBackend` post-processes. OpenVINO's ONNX frontend maps
  `NonMaxSuppression` to its own NMS op, so in-graph NMS works for static and dynamic shapes.
* Metadata: the `rtmdet` JSON the ONNX file carries goes into the IR's `rt_info` under the
  `rtmdet` key. It is written into the .xml itself, so the .xml/.bin pair is self-contained like an
  ONNX file (a sidecar .json, as TensorRT engines need, can get lost or go stale), `read_model`
  hands it back without extra files, and `nncf.quantize` / `save_model` keep it.
* `save_model` compresses weights to float16 by default; we keep float32 unless `half=True`
  (OpenVINO's CPU plugin decompresses f16 weights and computes in f32 or bf16 either way).
* Inference precision: on CPUs with bf16 support (AVX512_BF16 / AMX) OpenVINO computes in bf16 by
  default. The backend asks for f32 (`precision="f32"`) so an fp32 IR gives fp32 results (parity
  with PyTorch / ONNX Runtime); `precision=None` keeps the device's default, "bf16" forces it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .backends import BackendUnavailable, _GraphBackend
from .onnx import META_KEY

__all__ = ["OpenVINOBackend", "export_openvino", "read_ov_metadata", "import_openvino"]


def import_openvino():
    """`openvino`, or BackendUnavailable with a one-line reason."""
    try:
        import openvino  # noqa: PLC0415
    except ImportError:
        raise BackendUnavailable("OpenVINO is not installed (pip install openvino, or "
                                 "pip install 'rtmdet[openvino]')") from None
    return openvino


def read_ov_metadata(model) -> dict:
    """The rtmdet metadata of an `openvino.Model` (or an .xml / .onnx path); {} when absent.

    Ours sit under rt_info['rtmdet']; an ONNX file read (or converted) directly by OpenVINO keeps
    its metadata_props under rt_info['framework']['rtmdet'], which is accepted as well."""
    if isinstance(model, (str, os.PathLike)):
        model = import_openvino().Core().read_model(str(model))
    for key in ([META_KEY], ["framework", META_KEY]):
        if model.has_rt_info(key):
            return json.loads(model.get_rt_info(key).astype(str))
    return {}


def export_openvino(src, out_xml: str | os.PathLike, half: bool = False,
                    **onnx_kwargs) -> Path:
    """Write an OpenVINO IR (`out_xml` and the .bin next to it) and return the .xml path.

    `src`: an ONNX file from `export_onnx` / `rtmdet export` (or an `onnx.ModelProto` of one), or
    an RTMDet model, which is first exported with `export_onnx(model, ..., **onnx_kwargs)`
    (imgsz, batch, dynamic, nms, score_thr, ...). Static/dynamic shapes and in-graph NMS are the
    ONNX graph's. `half`: store float16 weights (half the file; computation is unchanged)."""
    ov = import_openvino()
    out_xml = Path(out_xml)
    if out_xml.suffix != ".xml":
        raise ValueError(f"{out_xml}: an OpenVINO IR path must end in .xml")
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(src, (str, os.PathLike)):
            if onnx_kwargs:
                raise TypeError(f"export options {sorted(onnx_kwargs)} only apply to a model")
            onnx_path = Path(src)
        elif hasattr(src, "graph"):  # onnx.ModelProto
            import onnx
            onnx_path = Path(tmp) / "model.onnx"
            onnx.save(src, str(onnx_path))
        else:  # an RTMDet nn.Module
            from .onnx import export_onnx
            onnx_path = export_onnx(src, Path(tmp) / "model.onnx", **onnx_kwargs)
        from .onnx import read_metadata
        meta = read_metadata(onnx_path)
        if not meta:
            raise ValueError(f"{onnx_path}: no rtmdet metadata; export it with `rtmdet export`")
        model = ov.convert_model(str(onnx_path))
    write_ov_model(model, out_xml, meta, half=half)
    return out_xml


def write_ov_model(model, out_xml: str | os.PathLike, meta: dict, half: bool = False) -> Path:
    """Save an `openvino.Model` with the rtmdet metadata in its rt_info (used by quantize too)."""
    ov = import_openvino()
    meta = dict(meta, openvino_half=bool(half))
    model.set_rt_info(json.dumps(meta), [META_KEY])
    ov.save_model(model, str(out_xml), compress_to_fp16=half)
    return Path(out_xml)


def _ov_device(device: str) -> str:
    d = str(device)
    if d.startswith("cuda"):
        raise BackendUnavailable("OpenVINO does not run on CUDA devices; use device='cpu' "
                                 "(or an OpenVINO device name: GPU, NPU, AUTO)")
    return d.upper()


class OpenVINOBackend(_GraphBackend):
    """Runs an IR from `export_openvino` (or an exported .onnx read by OpenVINO) on `device`
    ("cpu" or an OpenVINO device name). `threads`: inference threads (default: OpenVINO's).
    `precision`: "f32" (default: fp32 results), "bf16"/"f16", or None for the device default."""

    name = "openvino"

    def __init__(self, path: str, device: str = "cpu", threads: int | None = None,
                 precision: str | None = "f32", config: dict | None = None):
        ov = import_openvino()
        self.path = str(path)
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {self.path}")
        core = ov.Core()
        model = core.read_model(self.path)
        meta = read_ov_metadata(model)
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        dev = _ov_device(device)
        if precision and dev in ("CPU", "GPU"):
            cfg["INFERENCE_PRECISION_HINT"] = precision
        cfg.update(config or {})
        self.compiled = core.compile_model(model, dev, cfg)
        self.request = self.compiled.create_infer_request()
        n_out = len(self.compiled.outputs)
        # an output tensor may carry several names after conversion: take ours, in graph order
        self.output_names = list(meta.get("outputs") or
                                 [o.get_any_name() for o in self.compiled.outputs])[:n_out]
        ps = model.inputs[0].get_partial_shape()
        shape = tuple(d.get_length() if d.is_static else None for d in ps)
        self._setup(meta, shape)

    def infer(self, batch: np.ndarray):
        res = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)},
                                 share_inputs=True)
        return [np.asarray(res[o]) for o in self.compiled.outputs]
