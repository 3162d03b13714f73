"""TensorRT backend (needs `tensorrt` and a CUDA GPU); metadata in `<engine>.json`."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .backend import BackendUnavailable
from .graph_backend import GraphBackend


def import_tensorrt():
    """`tensorrt`, or BackendUnavailable with a one-line reason."""
    try:
        import tensorrt  # noqa: PLC0415
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed (pip install tensorrt; needs an "
                                 "NVIDIA GPU)") from None
    return tensorrt


class TrtBackend(GraphBackend):
    name = "tensorrt"
    accelerated = True

    def __init__(self, path: str, device: str = "cuda"):
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT needs a CUDA GPU; none is available")
        self.path = str(path)
        self.device = torch.device(device if str(device).startswith("cuda") else "cuda")
        meta_file = Path(path).with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as f, trt.Runtime(logger) as rt:
            self.engine = rt.deserialize_cuda_engine(f.read())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names
                               if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if n != self.input_name]
        self._trt = trt
        self.setup(meta, tuple(self.engine.get_tensor_shape(self.input_name)))

    def infer(self, x) -> dict:
        trt = self._trt
        x = torch.from_numpy(x).to(self.device)
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        outs = []
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                     trt.int64: torch.int64}[self.engine.get_tensor_dtype(n)]
            t = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(n, t.data_ptr())
            outs.append(t)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return dict(zip(self.output_names, outs))
