"""`Detector`: `predict` over any backend (PyTorch, ONNX Runtime, TensorRT), same `Detections`."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..detections import Detections
from .loop import run_inference
from .speed import SpeedOptions

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
GRAPH_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt",
                  ".trt": "tensorrt", ".plan": "tensorrt"}


def open_backend(path, device: str = "cpu", providers=None, threads: int | None = None,
                 model=None, options: SpeedOptions | None = None):
    """The backend for a file by its suffix: .onnx (ONNX Runtime), .xml (OpenVINO IR),
    .engine/.trt/.plan (TensorRT), else a checkpoint or zoo name (PyTorch). `model`: an already
    built torch model (left as it is: the speed `options` then run on a prepared copy)."""
    from .torch_backend import TorchBackend
    src = str(path)
    kind = GRAPH_SUFFIXES.get(Path(src).suffix.lower())
    if model is not None or kind is None:
        owned = model is None
        if model is None:
            from ..api import load
            model = load(src, device=device)
        return TorchBackend(model, options, owned=owned)
    if options is not None and dataclasses.replace(options, fuse=True) != SpeedOptions(fuse=True):
        raise ValueError(f"{src}: half/compile/cuda_graph/channels_last/preprocess apply to PyTorch "
                         "checkpoints; an exported graph keeps the precision it was exported with "
                         "(rtmdet export --half)")
    if kind == "onnxruntime":
        from .onnxruntime_backend import OrtBackend
        return OrtBackend(src, device, providers, threads)
    if kind == "openvino":
        from .openvino_backend import OpenVINOBackend
        return OpenVINOBackend(src, device, threads)
    from .tensorrt_backend import TrtBackend
    return TrtBackend(src, device)


class Detector:
    """Run a detector on any backend with `RTMDet.predict`'s arguments and results.

    `path`: a `.pth` checkpoint or zoo name (PyTorch), an `.onnx` file (ONNX Runtime, CPU or
    CUDA provider), an OpenVINO `.xml` IR (CPU), or an `.engine` file (TensorRT; needs
    `tensorrt` and a GPU). `device`:
    "cpu" or "cuda[:i]". Exported graphs must come from `rtmdet export`: they carry the model
    config, class names and test settings.

    PyTorch only (`rtmdet.inference.speed.SpeedOptions`): `fuse` (BatchNorm folded into the
    convs, on by default), `half` (True/"fp16" or "bf16"), `channels_last` (default: with half on
    CUDA, with fuse in float32 on the CPU), `compile` (torch.compile), `cuda_graph` (replay per
    input shape, CUDA), `preprocess="device"` (letterbox on the GPU)."""

    def __init__(self, path, device: str = "cpu", providers: list[str] | None = None,
                 threads: int | None = None, model=None, fuse: bool = True,
                 half: bool | str = False, channels_last: bool | None = None,
                 compile: bool = False, cuda_graph: bool = False, preprocess: str = "cpu"):
        options = SpeedOptions(fuse, half, channels_last, compile, cuda_graph, preprocess)
        self.backend = open_backend(path, device, providers, threads, model, options)
        self.path, self.device = str(path), device

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def family(self):
        return self.backend.family

    @property
    def class_names(self) -> list[str]:
        return self.backend.class_names

    @property
    def test_cfg(self):
        return self.backend.test_cfg

    @property
    def num_classes(self) -> int:
        return self.backend.model_cfg.num_classes

    def __repr__(self) -> str:
        return f"Detector({self.path!r}, backend={self.backend_name}, device={self.device!r})"

    # the three stages, separately timed by `rtmdet bench`
    def preprocess(self, images, imgsz=None):
        return self.backend.preprocess(images, self.backend.input_size(imgsz))

    def infer(self, x):
        return self.backend.infer(x)

    def postprocess(self, outputs, metas, cfg) -> list[Detections]:
        return self.backend.postprocess(outputs, metas, cfg)

    def predict(self, images, score_thr: float | None = None, nms_iou: float | None = None,
                max_per_img: int | None = None, nms_pre: int | None = None,
                batch_size: int = 8, imgsz: int | None = None,
                mask_thr: float | None = None, tile: int | None = None,
                overlap: int = 200, classes=None, tta: bool = False) -> list[Detections] | Detections:
        """Same arguments and results as `RTMDet.predict` (boxes in original pixels; `masks`
        (N,H,W) bool for RTMDet-Ins models and their graphs; `tile`/`overlap`: tiled
        inference for large images, see `rtmdet.inference.tiling`; `classes`: only those, see
        `rtmdet.inference.classes`; `tta`: test-time augmentation, see `rtmdet.inference.tta`)."""
        return run_inference(self.backend, images, batch_size=batch_size, tile=tile,
                             overlap=overlap, score_thr=score_thr, nms_iou=nms_iou,
                             max_per_img=max_per_img, nms_pre=nms_pre, imgsz=imgsz,
                             mask_thr=mask_thr, classes=classes, tta=tta)

    def stream(self, source, batch_size: int = 8, vid_stride: int = 1, on_skip=None, **knobs):
        """As `RTMDet.stream`: `Frame`s of every image and video frame `source` names."""
        from .stream import stream
        return stream(self, source, batch_size=batch_size, vid_stride=vid_stride, on_skip=on_skip,
                      **knobs)
