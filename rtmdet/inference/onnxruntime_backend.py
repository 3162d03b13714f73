"""ONNX Runtime backend (CPU, or CUDA with onnxruntime-gpu)."""
from __future__ import annotations

from .backend import BackendUnavailable
from .graph_backend import GraphBackend, read_onnx_metadata


class OrtBackend(GraphBackend):
    name = "onnxruntime"

    def __init__(self, path: str, device: str = "cpu", providers=None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime)") from None
        self.path = str(path)
        cuda = str(device).startswith("cuda")
        if providers is None:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        avail = ort.get_available_providers()
        if cuda and "CUDAExecutionProvider" not in avail:
            raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider here "
                                     "(install onnxruntime-gpu) - use device='cpu'")
        so = ort.SessionOptions()
        # the intra-op threads spin during a run (fast) but not after it, where they would take
        # the cores from our post-processing (measured: post 31 -> 15 ms, inference unchanged)
        so.add_session_config_entry("session.force_spinning_stop", "1")
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(self.path, so, providers=[p for p in providers if p in avail])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.setup(read_onnx_metadata(self.path), inp.shape)

    def infer(self, x) -> dict:
        return self.outputs(self.session.run(self.output_names, {self.input_name: x}))
