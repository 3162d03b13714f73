"""RTMDet-R training loss (mmrotate 1.x `RotatedRTMDetHead.loss_by_feat`).

Reference facts (configs/rotated_rtmdet/*-3x-dota.py, the fixture README):

* per level the distances (l, t, r, b) and the raw angle are decoded at the priors with
  `distance2obb` (le90: the angle is only wrapped into [-pi/2, pi/2), w/h not swapped); these
  boxes feed both the assigner (detached) and the box loss (with gradient into distances and
  angle: `PseudoAngleCoder`, no separate angle loss);
* assignment: `DynamicSoftLabelAssigner(topk=13)` on `RotatedBoxes`: candidates are the priors
  whose centre is inside a gt (in its rotated frame, 0.01 px margin), gt centre (cx, cy), IoU
  `rbbox_overlaps` (w, h clamped to >= 1e-3); the gts are used as given (not regularised);
* the matched gts are regularised to le90 (w >= h, theta in [-pi/2, pi/2)) before the box loss;
* loss_cls: QFL (beta 2) over all priors with the positives' IoU as target, per level divided by
  `1 + float32 eps`; loss_bbox: `RotatedIoULoss(mode='linear', loss_weight=2.0, eps=1e-6)`:
  `2 * sum over positives of IoU_target * (1 - max(diff_iou_rotated(pred, gt), 1e-6))`, per
  level divided by `1 + float32 eps`;
* both lists divided by the batch's summed assign metrics (averaged across processes, >= 1).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..ops.boxes import grid_priors
from ..ops.rotated import diff_iou_rotated, distance2obb, regularize_le90
from .assigner import ROTATED, DynamicSoftLabelAssigner
from .losses import QualityFocalLoss, assigned_losses

_F32_EPS = float(torch.finfo(torch.float32).eps)


class RotatedIoULoss(torch.nn.Module):
    """mmrotate `RotatedIoULoss`: 1 - IoU ('linear'), 1 - IoU^2 ('square') or -log IoU ('log')
    with the differentiable rotated IoU, IoU clamped to >= eps; computed in float32."""

    def __init__(self, mode: str = "linear", loss_weight: float = 2.0, eps: float = 1e-6):
        super().__init__()
        if mode not in ("linear", "square", "log"):
            raise ValueError(f"mode must be linear, square or log, got {mode!r}")
        self.mode, self.loss_weight, self.eps = mode, loss_weight, eps

    def forward(self, pred, target, weight=None, avg_factor: float | None = None):
        if weight is not None and not bool((weight > 0).any()):
            return (pred * weight[:, None]).sum()  # zero, keeps the graph (no IoU computed)
        with torch.autocast(pred.device.type, enabled=False):
            iou = diff_iou_rotated(pred.float(), target.float()).clamp(min=self.eps)
            if self.mode == "linear":
                loss = 1 - iou
            elif self.mode == "square":
                loss = 1 - iou ** 2
            else:
                loss = -iou.log()
            if weight is not None:
                loss = loss * weight
            loss = loss.sum() / (avg_factor + _F32_EPS) if avg_factor is not None else loss.mean()
        return self.loss_weight * loss


_ROTATED_ASSIGNER = DynamicSoftLabelAssigner(boxes=ROTATED)


def rotated_rtmdet_loss(model_outputs, gt_rboxes_list: Sequence[torch.Tensor],
                        gt_labels_list: Sequence[torch.Tensor], img_shape=None,
                        strides: Sequence[int] = (8, 16, 32), angle_version: str = "le90",
                        assigner: DynamicSoftLabelAssigner | None = None,
                        loss_cls: QualityFocalLoss | None = None,
                        loss_bbox: RotatedIoULoss | None = None) -> dict:
    """The reference loss dict for the rotated head's raw outputs `(cls_scores, bbox_preds,
    angle_preds)` and per-image gts `(n_i, 5)` (cx, cy, w, h, theta) in input pixels (any
    representation of the rectangle: the loss regularises the matched ones).

    Returns `{'loss_cls': [per level], 'loss_bbox': [per level], 'assign': AssignResult (B, N),
    'avg_factor', 'priors', 'pred_boxes' (B, N, 5) the decoded boxes the assigner saw}`; the
    objective is `sum(loss_cls) + sum(loss_bbox)`. `img_shape` does not change anything
    (`allowed_border=-1`)."""
    if angle_version != "le90":
        raise NotImplementedError("only angle_version='le90' is used by RTMDet-R")
    cls_scores, bbox_preds, angle_preds = model_outputs[0], model_outputs[1], model_outputs[2]
    B = cls_scores[0].shape[0]
    sizes = [c.shape[-2:] for c in cls_scores]
    priors_lv = grid_priors(sizes, strides, torch.float32, cls_scores[0].device, with_stride=True)
    decoded = []
    for p, r, a in zip(priors_lv, bbox_preds, angle_preds):
        dist = torch.cat([r.float(), a.float()], 1).permute(0, 2, 3, 1).reshape(B, -1, 5)
        decoded.append(distance2obb(p, dist, angle_version))
    out = assigned_losses(cls_scores, decoded, priors_lv, gt_rboxes_list, gt_labels_list,
                          assigner or _ROTATED_ASSIGNER,
                          loss_cls or QualityFocalLoss(beta=2.0, loss_weight=1.0),
                          loss_bbox or RotatedIoULoss("linear", loss_weight=2.0),
                          encode_targets=regularize_le90)
    out["pred_boxes"] = torch.cat(decoded, 1).detach()
    return out
