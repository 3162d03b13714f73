"""RTMDet-Ins training loss (the reference `RTMDetInsHead.loss_by_feat`).

Reference facts: the classification / box part is exactly the detection head's (same dynamic
soft-label assignment over all priors on detached predictions, QFL + GIoU per level, both divided
by the batch's summed assign metrics); the ins head's boxes are already `relu(reg) * stride`
distances, which the model's forward returns. The mask loss uses the same assignment: the
positives' dynamic-conv kernels applied to the prototypes, Dice against the matched gt masks,
averaged over the number of positives (all-reduced across processes, clamped to >= 1).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..ops.instance_masks import MASK_LOSS_STRIDE
from .assigner import DynamicSoftLabelAssigner
from .loss_mask import loss_mask as _loss_mask
from .losses import reduce_mean, rtmdet_loss


def flatten_kernels(kernel_preds: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level (B,P,H,W) kernel maps -> (B, N, P) in prior order (level by level, row-major)."""
    return torch.cat([k.permute(0, 2, 3, 1).reshape(k.shape[0], -1, k.shape[1])
                      for k in kernel_preds], 1)


def _as_mask_tensor(m, device) -> torch.Tensor:
    t = torch.as_tensor(m, device=device)
    if t.ndim == 2:  # a single (H,W) mask without the instance axis only when n == 1
        t = t[None]
    return t.bool()


def rtmdet_ins_loss(model_outputs, gt_boxes_list: Sequence[torch.Tensor],
                    gt_labels_list: Sequence[torch.Tensor], gt_masks_list: Sequence[torch.Tensor],
                    img_shape=None, strides: Sequence[int] = (8, 16, 32),
                    assigner: DynamicSoftLabelAssigner | None = None, *,
                    num_prototypes: int = 8, dyconv_channels: int = 8, num_dyconvs: int = 3,
                    mask_loss_stride: int = MASK_LOSS_STRIDE, mask_loss_weight: float = 2.0) -> dict:
    """Loss dict for the ins head's raw outputs `(cls_scores, bbox_preds, kernel_preds, mask_feat)`.

    gt_masks_list: per image (n_i, H, W) binary masks at the (padded) input size, or only the
    pixels the loss reads (`loss_mask`), in the same order as the boxes. Returns `{'loss_cls': [per level], 'loss_bbox': [per level],
    'loss_mask': tensor, 'assign': AssignResult, 'avg_factor': float, 'num_pos': float}`; the
    objective is `total_ins_loss(d)`."""
    cls_scores, bbox_preds, kernel_preds, mask_feat = model_outputs
    out = rtmdet_loss((cls_scores, bbox_preds), gt_boxes_list, gt_labels_list, img_shape,
                      strides=strides, assigner=assigner)
    res = out["assign"]
    device = cls_scores[0].device
    priors = out.pop("priors")
    kernels = flatten_kernels(kernel_preds)
    masks = [_as_mask_tensor(m, device) for m in gt_masks_list]
    for b, m in zip(gt_boxes_list, masks):
        if len(b) != len(m):
            raise ValueError(f"{len(b)} boxes but {len(m)} masks")
    num_pos = float(res.pos_mask.sum())
    num_pos = float(reduce_mean(torch.tensor(num_pos, device=device)))
    out["loss_mask"] = _loss_mask(mask_feat, kernels, priors, list(res.gt_inds), masks,
                                  num_prototypes=num_prototypes, dyconv_channels=dyconv_channels,
                                  num_dyconvs=num_dyconvs, feat_stride=strides[0],
                                  mask_loss_stride=mask_loss_stride, loss_weight=mask_loss_weight,
                                  num_pos_avg=num_pos)
    out["num_pos"] = max(num_pos, 1.0)
    return out


def total_ins_loss(loss_dict: dict) -> torch.Tensor:
    return sum(loss_dict["loss_cls"]) + sum(loss_dict["loss_bbox"]) + loss_dict["loss_mask"]
