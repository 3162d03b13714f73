"""Deployment: ONNX export, ONNX Runtime / TensorRT backends behind one `Detector`, benchmarks."""
from .backends import BackendUnavailable, Detector
from .onnx import export_onnx

__all__ = ["Detector", "BackendUnavailable", "export_onnx"]
