"""`Detector`: one predict() over PyTorch, ONNX Runtime or TensorRT, same `Detections` out.

Every backend shares the reference pre-processing (letterbox to the input size, pad 114) and
the reference post-processing (`ops.postprocess` semantics). A graph exported without NMS gives
decoded boxes + sigmoid scores, on which `postprocess_decoded` runs the reference steps (per
level score filter and top-k, rescale, min size, class-aware NMS), so detections equal PyTorch's.
A graph exported with NMS already holds those steps; we only rescale to original pixels.
RTMDet-Ins graphs add the mask outputs; masks are finished with `logits_to_masks`, the very
upsample / crop / threshold code `RTMDetIns.predict_masks` runs."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import TestConfig
from ..data.coco_classes import COCO_CLASSES
from ..data.letterbox import letterbox_batch
from ..detections import Detections
from ..models.detector import read_image
from ..models.detector_ins import logits_to_masks
from ..models.head_ins import dynamic_mask_logits, dynamic_param_sizes
from ..ops.boxes import grid_priors
from ..ops.postprocess import postprocess_decoded

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class BackendUnavailable(RuntimeError):
    """A backend's runtime (package or device) is missing."""


def level_sizes(h: int, w: int, strides: Sequence[int]) -> list[int]:
    """Points per level for an (h, w) input: each stride-2 conv maps n -> ceil(n / 2)."""
    return [math.ceil(h / s) * math.ceil(w / s) for s in strides]


# ------------------------------------------------------------------------------ backends
class _TorchBackend:
    name = "torch"

    def __init__(self, src: str, device: str, model=None):
        from ..api import load
        self.model = model if model is not None else load(src, device=device)
        self.model.eval()
        self.class_names = list(self.model.class_names)
        self.test_cfg = self.model.test_cfg
        self.fixed_size = None
        self.fixed_batch = None

    def preprocess(self, images, size):
        return self.model.preprocess(images, size)

    @torch.inference_mode()
    def infer(self, batch):
        out = self.model(batch)
        if batch.is_cuda:
            torch.cuda.synchronize()
        return out

    @torch.inference_mode()
    def postprocess(self, outputs, metas, cfg):
        return self.model.postprocess(outputs, metas, cfg)


class _GraphBackend:
    """Shared by ONNX Runtime and TensorRT: both run our exported graph."""

    def _setup(self, meta: dict, input_shape):
        if not meta:
            raise ValueError(f"{self.path}: no rtmdet metadata; export it with `rtmdet export`")
        self.meta = meta
        self.class_names = meta.get("class_names") or list(COCO_CLASSES)
        tc = {k: v for k, v in meta.get("test_cfg", {}).items()
              if k in {f.name for f in dataclasses.fields(TestConfig)}}
        self.test_cfg = TestConfig(**tc)
        if meta["nms"]:  # the graph's baked-in knobs are the defaults
            self.test_cfg = dataclasses.replace(self.test_cfg, score_thr=meta["score_thr"],
                                                nms_iou=meta["nms_iou"], max_per_img=meta["max_det"],
                                                nms_pre=meta["nms_pre"])
        self.strides = meta["strides"]
        b, _, h, w = input_shape
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.fixed_size = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 else None

    def preprocess(self, images, size):
        batch, metas = letterbox_batch(images, size)
        return batch.astype(np.float32), metas

    def _check_cfg(self, cfg: TestConfig):
        if not self.meta["nms"]:
            return
        m = self.meta
        if cfg.nms_iou != m["nms_iou"] or cfg.nms_pre != m["nms_pre"]:
            raise ValueError(f"{self.path} has NMS in the graph (nms_iou={m['nms_iou']}, "
                             f"nms_pre={m['nms_pre']}); re-export to change them")
        if cfg.score_thr < m["score_thr"] or cfg.max_per_img > m["max_det"]:
            raise ValueError(f"{self.path} has NMS in the graph (score_thr={m['score_thr']}, "
                             f"max_det={m['max_det']}); only a higher score_thr or lower "
                             f"max_per_img can be applied afterwards")

    def postprocess(self, outputs, metas, cfg):
        self._check_cfg(cfg)
        outs = dict(zip(self.output_names, (torch.as_tensor(o).cpu() for o in outputs)))
        with_mask = bool(self.meta.get("with_mask", False))
        results = []
        for i, meta in enumerate(metas):
            sw, sh = meta["scale_factor"]
            masks = None
            if self.meta["nms"]:
                n = int(outs["num_dets"][i, 0])
                b = outs["boxes"][i, :n].float()
                s, l = outs["scores"][i, :n].float(), outs["labels"][i, :n].long()
                b = b * b.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh])
                keep = (s > cfg.score_thr).nonzero().view(-1)[: cfg.max_per_img]
                b, s, l = b[keep], s[keep], l[keep]
                if with_mask:
                    logits = outs["masks"][i, :n][keep].float()
                    masks = logits_to_masks(logits, meta, self.strides[0], cfg.mask_thr)
            else:
                h, w = meta["img_shape"]
                sizes = level_sizes(h, w, self.strides)
                raw = postprocess_decoded(outs["boxes"][i].float(), outs["scores"][i].float(),
                                          sizes, (sw, sh), cfg)
                b, s, l = raw.boxes, raw.scores, raw.labels
                if with_mask:
                    masks = self._masks(outs["kernels"][i].float(), outs["mask_feat"][i].float(),
                                        raw.prior_inds, (h, w), meta, cfg.mask_thr)
            results.append(Detections(b, s, l, self.class_names, masks=masks,
                                      image_shape=tuple(meta["ori_shape"])))
        return results

    def _masks(self, kernels, mask_feat, prior_inds, hw, meta, mask_thr):
        """The kept priors' kernels -> dynamic convs -> `logits_to_masks`, as RTMDetIns does."""
        h, w = hw
        feat_sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in self.strides]
        priors = torch.cat(grid_priors(feat_sizes, self.strides, with_stride=True))[prior_inds]
        mh = self.meta["mask_head"]
        wn, bn = dynamic_param_sizes(mh["num_prototypes"], mh["dyconv_channels"],
                                     mh["num_dyconvs"])
        logits = dynamic_mask_logits(mask_feat, kernels[prior_inds], priors, wn, bn,
                                     mh["dyconv_channels"], self.strides[0])
        return logits_to_masks(logits, meta, self.strides[0], mask_thr)


class _OrtBackend(_GraphBackend):
    name = "onnxruntime"

    def __init__(self, path: str, device: str, providers=None, threads: int | None = None):
        import onnxruntime as ort

        from .onnx import read_metadata
        self.path = path
        if providers is None:
            providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                         if str(device).startswith("cuda") else ["CPUExecutionProvider"])
        avail = ort.get_available_providers()
        if str(device).startswith("cuda") and "CUDAExecutionProvider" not in avail:
            raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider here "
                                     "(install onnxruntime-gpu) - use device='cpu'")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, so, providers=[p for p in providers if p in avail])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._setup(read_metadata(path), inp.shape)

    def infer(self, batch: np.ndarray):
        return self.session.run(self.output_names, {self.input_name: batch})


class _TrtBackend(_GraphBackend):
    name = "tensorrt"

    def __init__(self, path: str, device: str):
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT needs a CUDA GPU; none is available")
        self.path = path
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
        self._setup(meta, tuple(self.engine.get_tensor_shape(self.input_name)))

    def infer(self, batch: np.ndarray):
        trt = self._trt
        x = torch.from_numpy(batch).to(self.device)
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
        return outs


def import_tensorrt():
    """`tensorrt`, or BackendUnavailable with a one-line reason."""
    try:
        import tensorrt  # noqa: PLC0415
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed (pip install tensorrt; needs an "
                                 "NVIDIA GPU)") from None
    return tensorrt


# ------------------------------------------------------------------------------ Detector
class Detector:
    """Run a detector on any backend with `RTMDet.predict`'s arguments and results.

    `path`: a `.pth` checkpoint or zoo name (PyTorch), an `.onnx` file (ONNX Runtime, CPU or
    CUDA provider), an `.engine` file (TensorRT; needs `tensorrt` and a GPU) or an OpenVINO
    `.xml` IR (`export_openvino`; CPU). `device`:
    "cpu" or "cuda[:i]". Exported graphs must come from `export_onnx` (`rtmdet export`): they
    carry the class names, strides and test settings."""

    def __init__(self, path, device: str = "cpu", providers: list[str] | None = None,
                 threads: int | None = None, model=None):
        src = str(path)
        suffix = Path(src).suffix.lower()
        if model is not None:
            self.backend = _TorchBackend(src, device, model=model)
        elif suffix == ".onnx":
            self.backend = _OrtBackend(src, device, providers, threads)
        elif suffix in (".engine", ".trt", ".plan"):
            self.backend = _TrtBackend(src, device)
        elif suffix == ".xml":  # OpenVINO IR
            from .openvino_backend import OpenVINOBackend
            self.backend = OpenVINOBackend(src, device, threads)
        else:
            self.backend = _TorchBackend(src, device)
        self.path, self.device = src, device
        self.class_names = self.backend.class_names
        self.test_cfg = self.backend.test_cfg

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return f"Detector({self.path!r}, backend={self.backend_name}, device={self.device!r})"

    def resolve_test_cfg(self, **overrides) -> TestConfig:
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self.test_cfg, **given)

    def input_size(self, imgsz=None) -> tuple[int, int]:
        fixed = self.backend.fixed_size
        if imgsz is None:
            return tuple(fixed) if fixed else (self.test_cfg.imgsz,) * 2
        size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        if fixed and tuple(fixed) != size:
            raise ValueError(f"{self.path} was exported for {fixed[0]}x{fixed[1]} input, not "
                             f"{size[0]}x{size[1]} (export with --dynamic for other sizes)")
        return size

    # the three stages, separately timed by `rtmdet bench`
    def preprocess(self, images: list[np.ndarray], imgsz=None):
        batch, metas = self.backend.preprocess(images, self.input_size(imgsz))
        fb = self.backend.fixed_batch
        if fb and len(images) != fb:  # a static-batch graph: pad with copies of the last image
            if len(images) > fb:
                raise ValueError(f"batch of {len(images)} > the graph's static batch {fb}")
            batch = np.concatenate([batch] + [batch[-1:]] * (fb - len(images)))
        return batch, metas

    def infer(self, batch):
        return self.backend.infer(batch)

    def postprocess(self, outputs, metas, cfg: TestConfig) -> list[Detections]:
        return self.backend.postprocess(outputs, metas, cfg)

    def predict(self, images, score_thr: float | None = None, nms_iou: float | None = None,
                max_per_img: int | None = None, nms_pre: int | None = None,
                batch_size: int = 8, imgsz: int | None = None,
                mask_thr: float | None = None) -> list[Detections] | Detections:
        """Same arguments and results as `RTMDet.predict` (boxes in original pixels); for
        RTMDet-Ins models (and their graphs) the `Detections` carry `masks` (N,H,W) bool at the
        original resolution, binarised at `mask_thr` (default `test_cfg.mask_thr`)."""
        single = isinstance(images, (str, Path, np.ndarray))
        items = [images] if single else list(images)
        cfg = self.resolve_test_cfg(score_thr=score_thr, nms_iou=nms_iou, max_per_img=max_per_img,
                                    nms_pre=nms_pre, imgsz=imgsz, mask_thr=mask_thr)
        if self.backend.fixed_batch:
            batch_size = min(batch_size, self.backend.fixed_batch)
        results: list[Detections] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            imgs = [read_image(x) for x in chunk]
            batch, metas = self.preprocess(imgs, imgsz if imgsz is not None else None)
            dets = self.postprocess(self.infer(batch), metas, cfg)
            for d, src in zip(dets, chunk):
                d.source = None if isinstance(src, np.ndarray) else str(src)
            results.extend(dets)
        return results[0] if single else results
