"""RTMDet training losses: Quality Focal Loss + GIoU, normalised as the reference does.

Reference facts (mmdet `RTMDetHead.loss_by_feat`):

* all priors are assigned at once (`DynamicSoftLabelAssigner` on detached logits and decoded
  boxes); every prior has classification weight 1 (`pos_weight=-1`, `allowed_border=-1`);
* the classification target of a positive is its assigned IoU ("assign metric"), 0 elsewhere;
* per level: `loss_cls = QFL summed over the level's priors and classes`, `loss_bbox =
  2.0 * sum over the level's positives of IoU_target * (1 - GIoU(pred, gt))`, each divided by
  `1 + float32 eps` (the `avg_factor=1.0` of the per-level call);
* then both lists are divided by the same kind of factor: the sum of the assign metrics over the
  batch (all positives' IoUs), averaged across processes, clamped to >= 1.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..ops.boxes import box_giou, distance2bbox, grid_priors
from .assigner import AssignResult, DynamicSoftLabelAssigner

_F32_EPS = float(torch.finfo(torch.float32).eps)


def quality_focal_loss(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                       beta: float = 2.0) -> torch.Tensor:
    """Sigmoid QFL per prior, summed over classes: logits (N,C); labels (N,) in 0..C-1 for
    positives, anything else (e.g. C or -1) for background; scores (N,) the positives' target
    quality. For every (prior, class): BCE(x, t) * |t - sigmoid(x)|^beta with t the soft one-hot."""
    C = logits.shape[-1]
    pos = (labels >= 0) & (labels < C)
    # the soft one-hot written row by row (a background row writes 0 into class 0): no boolean
    # indexing, whose nonzero would make the host wait for the device
    value = torch.where(pos, scores.to(logits.dtype), 0.0)
    target = torch.zeros_like(logits).scatter_(1, torch.where(pos, labels, 0)[:, None], value[:, None])
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") \
        * (target - logits.sigmoid()).abs().pow(beta)
    return loss.sum(-1)


class QualityFocalLoss(torch.nn.Module):
    """QFL with sigmoid (`use_sigmoid=True`): positives' target is the IoU score."""

    def __init__(self, beta: float = 2.0, loss_weight: float = 1.0):
        super().__init__()
        self.beta, self.loss_weight = beta, loss_weight

    def forward(self, logits, labels, scores, weight=None, avg_factor: float | None = None):
        loss = quality_focal_loss(logits.float(), labels, scores, self.beta)
        if weight is not None:
            loss = loss * weight
        loss = loss.sum() / (avg_factor + _F32_EPS) if avg_factor is not None else loss.mean()
        return self.loss_weight * loss


class GIoULoss(torch.nn.Module):
    def __init__(self, loss_weight: float = 2.0, eps: float = 1e-6):
        super().__init__()
        self.loss_weight, self.eps = loss_weight, eps

    def forward(self, pred, target, weight=None, avg_factor: float | None = None):
        if weight is not None and not bool((weight > 0).any()):
            return (pred * weight[:, None]).sum()  # zero, keeps the graph
        loss = 1 - box_giou(pred.float(), target.float(), self.eps)
        if weight is not None:
            loss = loss * weight
        loss = loss.sum() / (avg_factor + _F32_EPS) if avg_factor is not None else loss.mean()
        return self.loss_weight * loss


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over processes when torch.distributed is running, else unchanged."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return t


def pad_gts(gt_boxes_list: Sequence[torch.Tensor], gt_labels_list: Sequence[torch.Tensor],
            device=None, dim: int = 4):
    """Lists of (n_i,dim) boxes / (n_i,) labels -> (B,M,dim), (B,M), valid mask (B,M)."""
    B = len(gt_boxes_list)
    M = max((len(b) for b in gt_boxes_list), default=0)
    boxes = torch.zeros(B, M, dim, device=device)
    labels = torch.zeros(B, M, dtype=torch.long, device=device)
    valid = torch.zeros(B, M, dtype=torch.bool, device=device)
    for i, (b, l) in enumerate(zip(gt_boxes_list, gt_labels_list)):
        n = len(b)
        if n:
            boxes[i, :n] = torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, dim)
            labels[i, :n] = torch.as_tensor(l, device=device).long().reshape(-1)
            valid[i, :n] = True
    return boxes, labels, valid


_DEFAULT_ASSIGNER = DynamicSoftLabelAssigner()


def assigned_losses(cls_scores: Sequence[torch.Tensor], decoded: Sequence[torch.Tensor],
                    priors_lv: Sequence[torch.Tensor], gt_boxes_list: Sequence[torch.Tensor],
                    gt_labels_list: Sequence[torch.Tensor], assigner: DynamicSoftLabelAssigner,
                    loss_cls: torch.nn.Module, loss_bbox: torch.nn.Module,
                    encode_targets: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """What RTMDet's heads share once the boxes are decoded: assign every prior of the batch at
    once (on detached logits and boxes), then per level QFL over all priors and `loss_bbox`
    over the positives (weighted by their IoU "assign metric", `avg_factor=1.0`), both lists
    divided by the batch's summed assign metrics (averaged across processes, clamped to >= 1).

    cls_scores: per level (B,C,H,W) logits; decoded: per level (B,n,dim) boxes with gradient;
    priors_lv: per level (n,4) (x, y, stride, stride). `encode_targets` maps the matched gts
    before the box loss (RTMDet-R: le90 regularisation). Returns `{'loss_cls', 'loss_bbox'
    (lists over levels), 'assign' (AssignResult (B,N)), 'avg_factor', 'priors' (N,4)}`."""
    B, C = cls_scores[0].shape[:2]
    dim = decoded[0].shape[-1]
    device = cls_scores[0].device
    counts = [len(p) for p in priors_lv]
    priors = torch.cat(list(priors_lv))
    flat_cls = [c.permute(0, 2, 3, 1).reshape(B, -1, C) for c in cls_scores]
    all_cls = torch.cat(flat_cls, 1)
    all_box = torch.cat(list(decoded), 1)

    gt_boxes, gt_labels, gt_valid = pad_gts(gt_boxes_list, gt_labels_list, device, dim)
    res: AssignResult = assigner.assign(all_cls.detach(), all_box.detach(), priors,
                                        gt_boxes, gt_labels, gt_valid)
    pos = res.pos_mask
    labels = torch.where(pos, res.labels, torch.full_like(res.labels, C))
    metrics = torch.where(pos, res.max_overlaps, torch.zeros_like(res.max_overlaps))
    matched = (res.gt_inds - 1).clamp(min=0)
    bbox_targets = torch.gather(gt_boxes, 1, matched[..., None].expand(-1, -1, dim)) if gt_boxes.shape[1] \
        else torch.zeros(B, all_box.shape[1], dim, device=device)

    losses_cls, losses_bbox = [], []
    start = 0
    for lv, n in enumerate(counts):
        sl = slice(start, start + n)
        start += n
        lab = labels[:, sl].reshape(-1)
        met = metrics[:, sl].reshape(-1)
        losses_cls.append(loss_cls(flat_cls[lv].reshape(-1, C), lab, met, avg_factor=1.0))
        pred = decoded[lv].reshape(-1, dim)
        # the positives once as indices: one wait for their count, not one per boolean index
        p = pos[:, sl].reshape(-1).nonzero().squeeze(1)
        if len(p):
            target = bbox_targets[:, sl].reshape(-1, dim)[p]
            if encode_targets is not None:
                target = encode_targets(target)
            losses_bbox.append(loss_bbox(pred[p], target, weight=met[p], avg_factor=1.0))
        else:
            losses_bbox.append(pred.sum() * 0)
    factor = reduce_mean(metrics.sum().detach()).clamp_(min=1).item()
    return {"loss_cls": [x / factor for x in losses_cls],
            "loss_bbox": [x / factor for x in losses_bbox],
            "assign": res, "avg_factor": factor, "priors": priors}


def rtmdet_loss(model_outputs, gt_boxes_list: Sequence[torch.Tensor],
                gt_labels_list: Sequence[torch.Tensor], img_shape=None,
                strides: Sequence[int] = (8, 16, 32),
                assigner: DynamicSoftLabelAssigner | None = None,
                loss_cls: QualityFocalLoss | None = None, loss_bbox: GIoULoss | None = None) -> dict:
    """The reference loss dict for the head's raw outputs `(cls_scores, bbox_preds)`.

    Returns `{'loss_cls': [per level], 'loss_bbox': [per level], 'assign': AssignResult (B, N),
    'avg_factor': float, 'priors': (N, 4) x, y, stride, stride}`; the training objective is `sum(loss_cls) + sum(loss_bbox)`.
    `img_shape` is accepted for interface parity; with `allowed_border=-1` (the RTMDet setting)
    it does not change anything."""
    cls_scores, bbox_preds = model_outputs[0], model_outputs[1]
    B = cls_scores[0].shape[0]
    sizes = [c.shape[-2:] for c in cls_scores]
    priors_lv = grid_priors(sizes, strides, torch.float32, cls_scores[0].device, with_stride=True)
    decoded = [distance2bbox(p, b.permute(0, 2, 3, 1).reshape(B, -1, 4).float())
               for p, b in zip(priors_lv, bbox_preds)]
    return assigned_losses(cls_scores, decoded, priors_lv, gt_boxes_list, gt_labels_list,
                           assigner or _DEFAULT_ASSIGNER,
                           loss_cls or QualityFocalLoss(beta=2.0, loss_weight=1.0),
                           loss_bbox or GIoULoss(loss_weight=2.0))


def total_loss(loss_dict: dict) -> torch.Tensor:
    return sum(loss_dict["loss_cls"]) + sum(loss_dict["loss_bbox"])
