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
NO_NMS_MASK_OUTPUTS = ("kernels", "mask_feat")  # appended for RTMDet-Ins models
NMS_MASK_OUTPUTS = ("masks",)
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
                 rows >= num_dets padded with zeros (labels -1).
    RTMDet-Ins models (`model.cfg.with_mask`) add
      nms=False: kernels (B,N,169) dynamic-conv parameters per prior, mask_feat (B,8,H/8,W/8);
      nms=True:  masks (B,K,H/8,W/8) mask logits at stride 8 of the kept detections (zeros in
                 padded rows)."""

    def __init__(self, model: nn.Module, nms: bool = False, score_thr: float = 0.001,
                 nms_iou: float = 0.65, max_det: int = 300, nms_pre: int = 30000,
                 min_bbox_size: float = 0.0, half: bool = False):
        super().__init__()
        self.model = model
        self.strides = tuple(model.cfg.strides)
        self.nms = nms
        self.with_mask = bool(getattr(model.cfg, "with_mask", False))
        self.score_thr, self.nms_iou, self.max_det = float(score_thr), float(nms_iou), int(max_det)
        self.nms_pre, self.min_bbox_size, self.half = int(nms_pre), float(min_bbox_size), half

    def decode(self, images: torch.Tensor):
        x = (images - self.model.mean) / self.model.std
        if self.half:
            x = x.half()
        head_out = self.model(x)
        cls_scores, bbox_preds = head_out[:2]
        hw = torch._shape_as_tensor(images)[2:].to(torch.float32)  # traced: works when dynamic
        max_h, max_w = hw[0], hw[1]
        boxes, scores, priors = [], [], []
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
            priors.append(torch.stack([px[0], py[0], torch.full_like(px[0], s)], -1))
        if not self.with_mask:
            return boxes, scores
        kernel_preds, mask_feat = head_out[2], head_out[3]
        kernels = torch.cat([k.float().permute(0, 2, 3, 1).flatten(1, 2) for k in kernel_preds], 1)
        return boxes, scores, kernels, mask_feat.float(), torch.cat(priors, 0)

    def forward(self, images: torch.Tensor):
        decoded = self.decode(images)
        boxes, scores = decoded[:2]
        if not self.nms:
            return (torch.cat(boxes, 1), torch.cat(scores, 1)) + tuple(decoded[2:4])
        num_dets, out_boxes, out_scores, labels, box_idx = self._nms(boxes, scores)
        if not self.with_mask:
            return num_dets, out_boxes, out_scores, labels
        _, _, kernels, mask_feat, priors = decoded
        masks = self._masks(kernels, mask_feat, priors, box_idx, labels >= 0)
        return num_dets, out_boxes, out_scores, labels, masks

    def _masks(self, kernels, mask_feat, priors, box_idx, valid):
        """Stride-8 mask logits (B,K,h,w) of the kept detections: their priors' kernels and
        (x, y, stride), then the dynamic convs as batched matmuls."""
        from ..models.head_ins import batched_dynamic_mask_logits
        head = self.model.bbox_head
        k = kernels.gather(1, box_idx.unsqueeze(-1).expand(-1, -1, kernels.shape[-1]))
        pri = priors.index_select(0, box_idx.flatten()).reshape(box_idx.shape + (3,))
        logits = batched_dynamic_mask_logits(mask_feat, k, pri, head.weight_nums, head.bias_nums,
                                             head.dyconv_channels, self.strides[0])
        return torch.where(valid[..., None, None], logits, torch.zeros_like(logits))

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
        return num_dets, out_boxes, out_scores, labels, box_idx


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
    with_mask = wrapper.with_mask
    out_names = list(NMS_OUTPUTS if nms else NO_NMS_OUTPUTS)
    if with_mask:
        out_names += list(NMS_MASK_OUTPUTS if nms else NO_NMS_MASK_OUTPUTS)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        for n in out_names:
            dynamic_axes[n] = {0: "batch", 1: "anchors"} if not nms else {0: "batch"}
        for n in ("mask_feat", "masks"):
            if n in out_names:
                dynamic_axes[n] = {0: "batch", 2: "mask_height", 3: "mask_width"}
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
            "with_mask": with_mask, "outputs": out_names,
            **knobs, "test_cfg": dataclass_dict(cfg)}
    if with_mask:  # what the backends need to run the dynamic convs / upsample the masks
        meta["mask_head"] = {"num_prototypes": model.cfg.num_prototypes,
                             "dyconv_channels": model.cfg.dyconv_channels,
                             "num_dyconvs": model.cfg.num_dyconvs}
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
