"""ONNX export: raw BGR pixels in, decoded boxes + scores (or final detections) out.

Design choices
--------------
* Input `images` is (B,3,H,W) float32 holding raw 0..255 BGR pixels of the letterboxed image
  (pad value 114); the per-channel mean/std normalization is part of the graph, so a deployment
  only letterboxes, transposes HWC->CHW and casts to float32.
* We use the TorchScript exporter (`dynamo=False`): the in-graph NMS is a custom
  `torch.autograd.Function` whose `symbolic` emits ONNX `NonMaxSuppression` directly, which is
  the simplest, most explicit mapping (the dynamo exporter would need a custom op + translation
  table and does not trace our data-dependent eager NMS). Dynamic batch/height/width are given as
  `dynamic_axes`; everything shape-dependent (priors, clamp bounds) is computed from the traced
  input shape, so one dynamic graph serves any size that is a multiple of 32.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..atomic import WriteError, write_bytes
from ..config import to_dict
from ..inference.graph_backend import META_KEY, read_onnx_metadata
from ..inference.loop import check_knobs

class ExportModule(nn.Module):
    """What the ONNX graph computes, runnable in torch too (used for parity tests).

    forward(images (B,3,H,W) raw BGR 0..255) -> the model family's outputs:
      nms=False (`family.outputs`): detection: boxes (B,N,4) xyxy input pixels clamped to (W,H),
                 scores (B,N,C) sigmoid; RTMDet-Ins adds kernels (B,N,169), mask_feat (B,8,H/8,W/8);
      nms=True (`family.nms_outputs`): num_dets (B,1) int32, boxes (B,K,4), scores (B,K), labels
                 (B,K) int32 (rows >= num_dets zero, labels -1); RTMDet-Ins adds masks
                 (B,K,H/8,W/8) stride-8 mask logits of the kept detections.
      RTMDet-R (rotated) has no in-graph NMS: boxes (B,N,5) (cx, cy, w, h, theta) in input
                 pixels, scores (B,N,C); the exact rotated NMS runs after the graph (`Detector`)."""

    def __init__(self, model: nn.Module, nms: bool = False, score_thr: float = 0.001,
                 nms_iou: float = 0.65, max_det: int = 300, nms_pre: int = 30000,
                 min_bbox_size: float = 0.0, half: bool = False):
        super().__init__()
        self.model = model
        self.family = model.family
        self.nms, self.half = nms, half
        self.knobs = dict(score_thr=float(score_thr), nms_iou=float(nms_iou), max_det=int(max_det),
                          nms_pre=int(nms_pre), min_bbox_size=float(min_bbox_size))

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.family.nms_outputs if self.nms else self.family.outputs

    def forward(self, images: torch.Tensor):
        x = (images - self.model.mean) / self.model.std
        if self.half:
            x = x.half()
        hw = torch._shape_as_tensor(images)[2:].to(torch.float32)  # traced: works when dynamic
        decoded = self.model.decode(self.model(x), (hw[0], hw[1]))
        if self.nms:
            return self.family.export_nms(decoded, self.model.cfg, self.knobs)
        return tuple(decoded[n] for n in self.family.outputs)


def _size2(imgsz) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    h, w = imgsz
    return int(h), int(w)


def export_onnx(model: nn.Module, path: str | os.PathLike, imgsz: int | tuple[int, int] | None = None,
                batch: int = 1, dynamic: bool = False, nms: bool = False, opset: int = 17,
                half: bool = False, simplify: bool = False, score_thr: float | None = None,
                nms_iou: float | None = None, max_det: int | None = None,
                nms_pre: int | None = None, device: str | torch.device | None = None) -> Path:
    """Write `model` to an ONNX file and return its path (see module doc and docs/deploy.md).

    `imgsz` None: the size the model carries (`model.test_cfg.imgsz`: what it was trained
    for; 1024 for RTMDet-R). Unset post-processing knobs come from `model.test_cfg`; they only matter with `nms=True`
    (and are recorded in the file's metadata either way). `half` exports float16 weights
    (input and outputs stay float32; for GPU runtimes)."""
    import onnx

    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 11:
        raise ValueError(f"opset={opset!r}: >= 11 is needed (NonMaxSuppression, dynamic TopK)")
    check_knobs(batch_size=batch, imgsz=imgsz, score_thr=score_thr, nms_iou=nms_iou,
                max_per_img=max_det, nms_pre=nms_pre)
    if nms and not model.family.nms_outputs:
        raise ValueError(f"nms=True: {model.family.name} models have no in-graph NMS (standard "
                         "ONNX ops have no exact rotated-box NMS); export without NMS: the "
                         "Detector runs the exact rotated NMS after the graph")
    cfg = model.test_cfg
    knobs = dict(score_thr=cfg.score_thr if score_thr is None else score_thr,
                 nms_iou=cfg.nms_iou if nms_iou is None else nms_iou,
                 max_det=cfg.max_per_img if max_det is None else max_det,
                 nms_pre=cfg.nms_pre if nms_pre is None else nms_pre,
                 min_bbox_size=cfg.min_bbox_size)
    h, w = _size2(cfg.imgsz if imgsz is None else imgsz)
    if h % 32 or w % 32:
        raise ValueError(f"imgsz {h}x{w}: height and width must be multiples of 32")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if half and dev.type == "cpu":
        warnings.warn("half=True on CPU: float16 export is meant for GPU runtimes")
    import copy
    net = copy.deepcopy(model).to(dev).eval()
    if half:
        net = net.half()
        net.mean, net.std = model.mean.float().to(dev), model.std.float().to(dev)
    wrapper = ExportModule(net, nms=nms, half=half, **knobs).eval()
    dummy = torch.full((batch, 3, h, w), 114.0, device=dev)
    out_names = list(wrapper.output_names)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        for n in out_names:
            dynamic_axes[n] = {0: "batch", 1: "anchors"} if not nms else {0: "batch"}
        for n in ("mask_feat", "masks"):
            if n in out_names:
                dynamic_axes[n] = {0: "batch", 2: "mask_height", 3: "mask_width"}
    path = Path(path)
    if path.is_dir():  # found before the (slow) export runs
        raise WriteError(path, "it is a folder (give a file name)")
    buf = io.BytesIO()  # the graph is built in memory and written once, atomically
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (dummy,), buf, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=out_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        import onnxslim
        proto = onnxslim.slim(proto)
    meta = {"model": to_dict(model.cfg), "strides": list(model.cfg.strides),
            "num_classes": model.cfg.num_classes, "family": model.cfg.family,
            "class_names": list(model.class_names), "imgsz": [h, w], "batch": batch,
            "dynamic": dynamic, "nms": nms, "half": half, "input": "raw BGR 0..255",
            "outputs": out_names, **knobs, "test_cfg": to_dict(cfg)}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    return write_bytes(path, proto.SerializeToString())


def read_metadata(path: str | os.PathLike) -> dict:
    """The `rtmdet` metadata an exported file carries ({} when absent)."""
    return read_onnx_metadata(path)
