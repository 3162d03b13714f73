"""The reference post-processing: per-level score filter and top-k, decode, rescale, NMS.

Two entry points share every step: `postprocess_single` for raw head maps (PyTorch models) and
`postprocess_decoded` for already decoded boxes and sigmoid scores (exported graphs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import TestConfig
from .boxes import distance2bbox
from .nms import batched_nms


@dataclass
class RawDetections:
    """One image's kept detections; `prior_inds` index the concatenated priors (for mask heads),
    `boxes_input` are the same boxes in network-input pixels."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    prior_inds: torch.Tensor
    boxes_input: torch.Tensor


def select_topk(scores: torch.Tensor, score_thr: float, nms_pre: int):
    """One level's (N,C) scores -> the (prior, class) pairs above `score_thr`, best `nms_pre`
    first: (scores, prior indices, labels)."""
    valid = scores > score_thr
    vals = scores[valid]
    idxs = valid.nonzero()
    k = min(nms_pre, idxs.shape[0]) if nms_pre > 0 else idxs.shape[0]
    vals, order = vals.sort(descending=True)
    keep, labels = idxs[order[:k]].unbind(dim=1)
    return vals[:k], keep, labels


def finish(boxes_in: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
           inds: torch.Tensor, scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """Rescale to original pixels, drop boxes not wider/taller than `min_bbox_size`, class-aware
    NMS, keep `max_per_img` by score."""
    sw, sh = scale_factor
    boxes = boxes_in * boxes_in.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh])
    if cfg.min_bbox_size >= 0:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        if not bool(ok.all()):
            boxes, boxes_in, scores, labels, inds = boxes[ok], boxes_in[ok], scores[ok], labels[ok], inds[ok]
    keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_per_img]
    return RawDetections(boxes[keep], scores[keep], labels[keep], inds[keep], boxes_in[keep])


def postprocess_single(cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                       priors: list[torch.Tensor], img_shape: tuple[int, int],
                       scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """One image: cls (C,H,W) logits and reg (4,H,W) distances per level -> kept detections.

    `img_shape` is the (h, w) decoded boxes are clamped to (the reference uses the padded input
    shape); `scale_factor` (w, h) maps original pixels to input pixels."""
    sel_reg, sel_priors, sel_scores, sel_labels, sel_inds = [], [], [], [], []
    offset = 0
    for cls, reg, pri in zip(cls_scores, bbox_preds, priors):
        scores = cls.permute(1, 2, 0).reshape(-1, cls.shape[0]).sigmoid()
        vals, keep, labels = select_topk(scores, cfg.score_thr, cfg.nms_pre)
        sel_scores.append(vals)
        sel_labels.append(labels)
        sel_reg.append(reg.permute(1, 2, 0).reshape(-1, 4)[keep])
        sel_priors.append(pri[keep])
        sel_inds.append(keep + offset)
        offset += pri.shape[0]
    boxes_in = distance2bbox(torch.cat(sel_priors), torch.cat(sel_reg), max_shape=img_shape)
    return finish(boxes_in, torch.cat(sel_scores), torch.cat(sel_labels), torch.cat(sel_inds),
                  scale_factor, cfg)


def postprocess_decoded(boxes: torch.Tensor, scores: torch.Tensor, sizes: Sequence[int],
                        scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """The same steps on one image's decoded outputs: boxes (N,4) xyxy in input pixels, already
    clamped; scores (N,C) sigmoid; `sizes` the number of points per level."""
    sel_boxes, sel_scores, sel_labels, sel_inds = [], [], [], []
    offset = 0
    for b, s in zip(boxes.split(list(sizes)), scores.split(list(sizes))):
        vals, keep, labels = select_topk(s, cfg.score_thr, cfg.nms_pre)
        sel_scores.append(vals)
        sel_labels.append(labels)
        sel_boxes.append(b[keep])
        sel_inds.append(keep + offset)
        offset += b.shape[0]
    return finish(torch.cat(sel_boxes), torch.cat(sel_scores), torch.cat(sel_labels),
                  torch.cat(sel_inds), scale_factor, cfg)
