"""Inference: one loop (`run_inference`) and the backends it drives (`Detector`)."""
from .backend import Backend, BackendUnavailable
from .detector import BACKENDS, Detector, open_backend
from .loop import check_knobs, resolve_test_cfg, run_inference
from .torch_backend import TorchBackend

__all__ = ["Backend", "BackendUnavailable", "BACKENDS", "Detector", "open_backend",
           "check_knobs", "resolve_test_cfg", "run_inference", "TorchBackend"]
