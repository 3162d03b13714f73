"""The reference post-processing: per-level score filter and top-k, decode, rescale, NMS."""
from __future__ import annotations

from dataclasses import dataclass

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


def postprocess_single(cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                       priors: list[torch.Tensor], img_shape: tuple[int, int],
                       scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """One image: cls (C,H,W) logits and reg (4,H,W) distances per level -> kept detections.

    `img_shape` is the resized (unpadded) (h, w) boxes are clamped to; `scale_factor` (w, h)
    maps original pixels to input pixels."""
    mlvl_reg, mlvl_priors, mlvl_scores, mlvl_labels, mlvl_inds = [], [], [], [], []
    offset = 0
    for cls, reg, pri in zip(cls_scores, bbox_preds, priors):
        num_classes = cls.shape[0]
        reg = reg.permute(1, 2, 0).reshape(-1, 4)
        scores = cls.permute(1, 2, 0).reshape(-1, num_classes).sigmoid()
        valid = scores > cfg.score_thr
        vals = scores[valid]
        idxs = valid.nonzero()
        k = min(cfg.nms_pre, idxs.shape[0]) if cfg.nms_pre > 0 else idxs.shape[0]
        vals, order = vals.sort(descending=True)
        top = idxs[order[:k]]
        keep, labels = top.unbind(dim=1)
        mlvl_scores.append(vals[:k])
        mlvl_labels.append(labels)
        mlvl_reg.append(reg[keep])
        mlvl_priors.append(pri[keep])
        mlvl_inds.append(keep + offset)
        offset += pri.shape[0]
    boxes_in = distance2bbox(torch.cat(mlvl_priors), torch.cat(mlvl_reg), max_shape=img_shape)
    scores = torch.cat(mlvl_scores)
    labels = torch.cat(mlvl_labels)
    inds = torch.cat(mlvl_inds)
    sw, sh = scale_factor
    inv = boxes_in.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh])
    boxes = boxes_in * inv
    if cfg.min_bbox_size >= 0:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        if not bool(ok.all()):
            boxes, boxes_in, scores, labels, inds = boxes[ok], boxes_in[ok], scores[ok], labels[ok], inds[ok]
    keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_per_img]
    return RawDetections(boxes[keep], scores[keep], labels[keep], inds[keep], boxes_in[keep])
