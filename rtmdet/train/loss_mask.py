"""RTMDet-Ins mask loss (the reference `RTMDetInsHead.loss_mask_by_feat` + `DiceLoss`), as pure
functions of the head outputs and an assignment (so the assigner lives elsewhere)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..models.head_ins import dynamic_mask_logits, dynamic_param_sizes
from ..ops.instance_masks import MASK_LOSS_STRIDE

FLOAT32_EPS = torch.finfo(torch.float32).eps


def dice_loss(logits: torch.Tensor, target: torch.Tensor, avg_factor: float | None = None,
              eps: float = 5e-6, loss_weight: float = 2.0) -> torch.Tensor:
    """V-Net Dice on sigmoid(logits) per instance: 1 - 2*sum(p*t) / (sum(p^2)+eps + sum(t^2)+eps),
    summed and divided by (avg_factor + float32 eps) (mean when avg_factor is None), x weight."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1).float()
    a = (p * t).sum(1)
    b = (p * p).sum(1) + eps
    c = (t * t).sum(1) + eps
    loss = 1 - 2 * a / (b + c)
    loss = loss.mean() if avg_factor is None else loss.sum() / (avg_factor + FLOAT32_EPS)
    return loss_weight * loss


def loss_mask(mask_feats: torch.Tensor, flatten_kernels: torch.Tensor, priors: torch.Tensor,
              gt_inds: Sequence[torch.Tensor], gt_masks: Sequence[torch.Tensor], *,
              num_prototypes: int = 8, dyconv_channels: int = 8, num_dyconvs: int = 3,
              feat_stride: int = 8, mask_loss_stride: int = MASK_LOSS_STRIDE, eps: float = 5e-6,
              loss_weight: float = 2.0, num_pos_avg: float | None = None) -> torch.Tensor:
    """The mask loss of a batch.

    mask_feats (B,P,h,w): prototypes at `feat_stride`; flatten_kernels (B,N,params): every
    prior's dynamic-conv parameters in prior order (level by level, row-major); priors (N,4):
    (x, y, stride_x, stride_y); gt_inds: per image (N,) assignment, 0 = background, k = gt k-1
    (the assigner's `gt_inds`); gt_masks: per image (n_gt, H, W) masks at the padded input size,
    or only their pixels the loss reads, (n_gt, len(range(s//2, H, s)), ...) (a mask target's
    ``as_array(s)``: what the training loader returns).

    As the reference: positives in ascending prior order, their logits upsampled bilinearly by
    feat_stride // mask_loss_stride, gt masks subsampled at [s//2::s, s//2::s] (s =
    mask_loss_stride), Dice averaged over the number of positives (clamped to >= 1;
    `num_pos_avg` overrides it, e.g. with an all-reduced mean across processes)."""
    weight_nums, bias_nums = dynamic_param_sizes(num_prototypes, dyconv_channels, num_dyconvs)
    logits, targets = [], []
    for feat, kernels, inds, masks in zip(mask_feats, flatten_kernels, gt_inds, gt_masks):
        pos = torch.nonzero(inds > 0, as_tuple=False).squeeze(-1).unique()
        logits.append(dynamic_mask_logits(feat, kernels[pos], priors[pos], weight_nums,
                                          bias_nums, dyconv_channels, feat_stride))
        if masks.numel() == 0:
            targets.append(masks.new_empty((0,) + tuple(masks.shape[1:]), dtype=torch.bool))
        else:
            targets.append(masks[inds[pos] - 1].bool())
    logits_all = torch.cat(logits, 0)
    targets_all = torch.cat(targets, 0)
    num_pos = float(logits_all.shape[0]) if num_pos_avg is None else float(num_pos_avg)
    num_pos = max(num_pos, 1.0)
    if logits_all.shape[0] == 0:
        return mask_feats.sum() * 0
    scale = feat_stride // mask_loss_stride
    logits_all = F.interpolate(logits_all.unsqueeze(0), scale_factor=scale, mode="bilinear",
                               align_corners=False).squeeze(0)
    half = mask_loss_stride // 2
    full = (mask_feats.shape[-2] * feat_stride, mask_feats.shape[-1] * feat_stride)
    grid = (len(range(half, full[0], mask_loss_stride)), len(range(half, full[1], mask_loss_stride)))
    shape = tuple(targets_all.shape[-2:])
    if shape == full:
        targets_all = targets_all[:, half::mask_loss_stride, half::mask_loss_stride]
    elif shape != grid:
        raise ValueError(f"gt masks of size {shape}: expected the input size {full} or the loss grid {grid}")
    return dice_loss(logits_all, targets_all, num_pos, eps, loss_weight)
