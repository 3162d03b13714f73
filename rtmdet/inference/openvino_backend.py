"""OpenVINO backend: runs an IR written by `rtmdet.deploy.openvino.export_openvino` (metadata in
the IR's rt_info) on the CPU (or another OpenVINO device).

Inference precision: on CPUs with bf16 support (AVX512_BF16 / AMX) OpenVINO computes in bf16 by
default; the backend asks for f32 (`precision="f32"`) so an fp32 IR gives fp32 results (parity
with PyTorch / ONNX Runtime); `precision=None` keeps the device's default, "bf16" forces it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .backend import BackendUnavailable
from .graph_backend import META_KEY, GraphBackend


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


def _ov_device(device: str) -> str:
    d = str(device)
    if d.startswith("cuda"):
        raise BackendUnavailable("OpenVINO does not run on CUDA devices; use device='cpu' "
                                 "(or an OpenVINO device name: GPU, NPU, AUTO)")
    return d.upper()


class OpenVINOBackend(GraphBackend):
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
        self.setup(meta, shape)

    def infer(self, x: np.ndarray) -> dict:
        res = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)}, share_inputs=True)
        return self.outputs([np.asarray(res[o]) for o in self.compiled.outputs])
