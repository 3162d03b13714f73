"""Build a TensorRT engine from an exported ONNX file (needs `tensorrt` and a CUDA GPU)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..atomic import write_bytes, write_json
from ..inference import BackendUnavailable
from ..inference.graph_backend import read_onnx_metadata as read_metadata
from ..inference.tensorrt_backend import import_tensorrt


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike | None = None,
                 half: bool = False, workspace_gb: float = 4.0, max_batch: int = 8,
                 max_size: int = 1280) -> Path:
    """Parse `onnx_path`, build a serialized engine next to it (or at `engine_path`) and write
    the graph's rtmdet metadata to `<engine>.json`. Dynamic inputs get an optimization profile
    from 1x3x32x32 to `max_batch`x3x`max_size`x`max_size`, optimal at the exported size."""
    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise BackendUnavailable("building a TensorRT engine needs a CUDA GPU; none is available")
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    meta = read_metadata(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if half and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if any(d < 0 for d in shape):
        h, w = meta.get("imgsz", [640, 640])
        b = meta.get("batch", 1)
        profile = builder.create_optimization_profile()
        lo = tuple(1 if d < 0 and i == 0 else 32 if d < 0 else d for i, d in enumerate(shape))
        opt = tuple(b if d < 0 and i == 0 else (h if i == 2 else w) if d < 0 else d
                    for i, d in enumerate(shape))
        hi = tuple(max_batch if d < 0 and i == 0 else max_size if d < 0 else d
                   for i, d in enumerate(shape))
        profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    write_bytes(engine_path, bytes(blob))
    write_json(engine_path.with_suffix(".json"), meta)
    return engine_path
