"""Deployment: ONNX export (static/dynamic, optional in-graph NMS), TensorRT engines, benchmarks.
The backends that run exported models live in `rtmdet.inference`."""
from .onnx import export_onnx

__all__ = ["export_onnx"]
