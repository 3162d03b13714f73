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

import json
import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

NO_NMS_OUTPUTS = ("boxes", "scores")
NMS_OUTPUTS = ("num_dets", "boxes", "scores", "labels")
META_KEY = "rtmdet"


class _MultiClassNMS(torch.autograd.Function):
    """ONNX NonMaxSuppression: boxes (B,N,4), scores (B,C,N) -> selected (M,3) [batch, class, box].

    Eager forward follows the ONNX semantics (per batch and class, score > score_thr, greedy
    IoU > iou suppression, at most `max_out` per class) using torchvision's kernel."""

    @staticmethod
    def forward(ctx, boxes, scores, max_out: int, iou: float, score_thr: float):
        rows = []
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c]
                idx = (s > score_thr).nonzero().view(-1)
                if idx.numel() == 0:
                    continue
                keep = idx[torchvision.ops.nms(boxes[b, idx], s[idx], iou)][:max_out]
                rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
        if not rows:
            return torch.zeros((0, 3), dtype=torch.long, device=boxes.device)
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou, score_thr):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.long)),
                    g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([score_thr], dtype=torch.float32)),
                    center_point_box_i=0)


class ExportModule(nn.Module):
    """What the ONNX graph computes, runnable in torch too (used for parity tests).

    forward(images (B,3,H,W) raw BGR 0..255) ->
      nms=False: boxes (B,N,4) xyxy input pixels clamped to (W,H), scores (B,N,C) sigmoid;
      nms=True:  num_dets (B,1) int32, boxes (B,K,4), scores (B,K), labels (B,K) int32,
                 rows >= num_dets padded with zeros (labels -1)."""

    def __init__(self, model: nn.Module, nms: bool = False, score_thr: float = 0.001,
                 nms_iou: float = 0.65, max_det: int = 300, nms_pre: int = 30000,
                 min_bbox_size: float = 0.0, half: bool = False):
        super().__init__()
        self.model = model
        self.strides = tuple(model.cfg.strides)
        self.nms = nms
        self.score_thr, self.nms_iou, self.max_det = float(score_thr), float(nms_iou), int(max_det)
        self.nms_pre, self.min_bbox_size, self.half = int(nms_pre), float(min_bbox_size), half

    def decode(self, images: torch.Tensor):
        x = (images - self.model.mean) / self.model.std
        if self.half:
            x = x.half()
        cls_scores, bbox_preds = self.model(x)[:2]
        hw = torch._shape_as_tensor(images)[2:].to(torch.float32)  # traced: works when dynamic
        max_h, max_w = hw[0], hw[1]
        boxes, scores = [], []
        for cls, reg, s in zip(cls_scores, bbox_preds, self.strides):
            cls, reg = cls.float(), reg.float()
            shape = torch._shape_as_tensor(cls)
            xs = torch.arange(shape[3], device=cls.device) * s
            ys = torch.arange(shape[2], device=cls.device) * s
            yy, xx = torch.meshgrid(ys.float(), xs.float(), indexing="ij")
            px, py = xx.reshape(1, -1), yy.reshape(1, -1)
            d = reg.permute(0, 2, 3, 1).flatten(1, 2)  # (B,HW,4)
            x1 = torch.minimum((px - d[..., 0]).clamp(min=0), max_w)
            y1 = torch.minimum((py - d[..., 1]).clamp(min=0), max_h)
            x2 = torch.minimum((px + d[..., 2]).clamp(min=0), max_w)
            y2 = torch.minimum((py + d[..., 3]).clamp(min=0), max_h)
            boxes.append(torch.stack([x1, y1, x2, y2], -1))
            scores.append(cls.permute(0, 2, 3, 1).flatten(1, 2).sigmoid())
        return boxes, scores

    def forward(self, images: torch.Tensor):
        boxes, scores = self.decode(images)
        if not self.nms:
            return torch.cat(boxes, 1), torch.cat(scores, 1)
        return self._nms(boxes, scores)

    def _nms(self, boxes_l, scores_l):
        # Per level: keep the top `nms_pre` (box, class) pairs above score_thr (the reference's
        # filter-then-topk); `nms_pre` dummies of score -1 make k a constant for dynamic shapes.
        masked = []
        for sc in scores_l:
            b = sc.shape[0]
            flat = sc.flatten(1)  # (B, HW*C)
            if self.nms_pre > 0:
                pad = torch.full((b, self.nms_pre), -1.0, dtype=flat.dtype, device=flat.device)
                _, idx = torch.cat([flat, pad], 1).topk(self.nms_pre, dim=1)
                keep = torch.zeros_like(torch.cat([flat, pad], 1)).scatter(1, idx, 1.0)
                keep = keep[:, : torch._shape_as_tensor(flat)[1]] > 0
                flat = torch.where(keep, flat, torch.full_like(flat, -1.0))
            masked.append(flat.reshape(sc.shape))
        scores = torch.cat(masked, 1)  # (B,N,C), -1 = dropped
        boxes = torch.cat(boxes_l, 1)
        wh = boxes[..., 2:] - boxes[..., :2]
        ok = (wh > self.min_bbox_size).all(-1, keepdim=True)
        scores = torch.where(ok, scores, torch.full_like(scores, -1.0))
        scores_t = scores.transpose(1, 2).contiguous()  # (B,C,N)
        sel = _MultiClassNMS.apply(boxes, scores_t, self.max_det, self.nms_iou, self.score_thr)
        bi, ci, ni = sel[:, 0], sel[:, 1], sel[:, 2]
        shape = torch._shape_as_tensor(scores_t)
        sel_scores = scores_t.flatten().index_select(0, (bi * shape[1] + ci) * shape[2] + ni)
        bsz = boxes.shape[0]
        batch_ids = torch.arange(bsz, device=boxes.device)
        cand = torch.where(bi[None, :] == batch_ids[:, None], sel_scores[None, :],
                           torch.full_like(sel_scores[None, :], -1.0))  # (B,M)
        k = self.max_det
        cand = torch.cat([cand, torch.full((bsz, k), -1.0, dtype=cand.dtype, device=cand.device)], 1)
        top, idx = cand.topk(k, dim=1)  # (B,K)
        valid = top >= 0
        zeros = torch.zeros(k, dtype=ni.dtype, device=ni.device)
        box_idx = torch.cat([ni, zeros]).index_select(0, idx.flatten()).reshape(idx.shape)
        lab = torch.cat([ci, zeros]).index_select(0, idx.flatten()).reshape(idx.shape)
        out_boxes = boxes.gather(1, box_idx.unsqueeze(-1).expand(-1, -1, 4))
        out_boxes = torch.where(valid.unsqueeze(-1), out_boxes, torch.zeros_like(out_boxes))
        out_scores = torch.where(valid, top, torch.zeros_like(top))
        labels = torch.where(valid, lab, torch.full_like(lab, -1)).to(torch.int32)
        num_dets = valid.sum(1, keepdim=True).to(torch.int32)
        return num_dets, out_boxes, out_scores, labels


def _size2(imgsz) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    h, w = imgsz
    return int(h), int(w)


def export_onnx(model: nn.Module, path: str | os.PathLike, imgsz: int | tuple[int, int] = 640,
                batch: int = 1, dynamic: bool = False, nms: bool = False, opset: int = 17,
                half: bool = False, simplify: bool = False, score_thr: float | None = None,
                nms_iou: float | None = None, max_det: int | None = None,
                nms_pre: int | None = None, device: str | torch.device | None = None) -> Path:
    """Write `model` to an ONNX file and return its path (see module doc and docs/deploy.md).

    Unset post-processing knobs come from `model.test_cfg`; they only matter with `nms=True`
    (and are recorded in the file's metadata either way). `half` exports float16 weights
    (input and outputs stay float32; for GPU runtimes)."""
    import onnx

    if opset < 11:
        raise ValueError("opset >= 11 is needed (NonMaxSuppression, dynamic TopK)")
    cfg = model.test_cfg
    knobs = dict(score_thr=cfg.score_thr if score_thr is None else score_thr,
                 nms_iou=cfg.nms_iou if nms_iou is None else nms_iou,
                 max_det=cfg.max_per_img if max_det is None else max_det,
                 nms_pre=cfg.nms_pre if nms_pre is None else nms_pre,
                 min_bbox_size=cfg.min_bbox_size)
    h, w = _size2(imgsz)
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
    out_names = list(NMS_OUTPUTS if nms else NO_NMS_OUTPUTS)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        for n in out_names:
            dynamic_axes[n] = {0: "batch", 1: "anchors"} if not nms else {0: "batch"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=out_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load(str(path))
    if simplify:
        import onnxslim
        proto = onnxslim.slim(proto)
    meta = {"strides": list(model.cfg.strides), "num_classes": model.cfg.num_classes,
            "class_names": list(model.class_names), "imgsz": [h, w], "batch": batch,
            "dynamic": dynamic, "nms": nms, "half": half, "input": "raw BGR 0..255",
            **knobs, "test_cfg": dataclass_dict(cfg)}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def dataclass_dict(obj) -> dict:
    import dataclasses
    return dataclasses.asdict(obj)


def read_metadata(path: str | os.PathLike) -> dict:
    """The `rtmdet` metadata an exported file carries ({} when absent)."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return {}
