"""RTMDetInsSepBNHead: the RTMDet head plus a dynamic-kernel branch and a prototype (mask) branch.

Facts of the reference layout kept here so official checkpoints load with `strict=True`:
- `reg_convs[n]` is the very same tower as `cls_convs[n]` (the reference appends the cls tower to
  both lists), so the regression branch reuses the classification features; the state_dict still
  lists both prefixes.
- with `share_conv`, the tower convs of levels 1.. are level 0's; BNs stay per level. The kernel
  towers (`kernel_convs`) are never shared.
- regression is `relu(rtm_reg(x)) * stride` (no exp, whatever `exp_on_reg` says for detection).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.instance_masks import MASK_LOSS_STRIDE, dynamic_mask_logits, dynamic_param_sizes
from .head import bias_init_with_prob, init_head_modules
from .layers import ConvModule


class MaskFeatModule(nn.Module):
    """Fuse the 3 neck levels at stride 8 (bilinear upsampling + concat + 1x1), 4 ConvModules,
    then a 1x1 projection to `num_prototypes` channels."""

    def __init__(self, in_channels: int, feat_channels: int = 256, stacked_convs: int = 4,
                 num_levels: int = 3, num_prototypes: int = 8, **bn):
        super().__init__()
        self.num_levels = num_levels
        self.fusion_conv = nn.Conv2d(num_levels * in_channels, in_channels, 1)
        self.stacked_convs = nn.Sequential(*[
            ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, **bn)
            for i in range(stacked_convs)])
        self.projection = nn.Conv2d(feat_channels, num_prototypes, 1)

    def forward(self, feats) -> torch.Tensor:
        size = feats[0].shape[-2:]
        fused = [feats[0]] + [F.interpolate(feats[i], size=size, mode="bilinear",
                                            align_corners=False)
                              for i in range(1, self.num_levels)]
        x = self.fusion_conv(torch.cat(fused, dim=1))
        return self.projection(self.stacked_convs(x))


class RTMDetInsSepBNHead(nn.Module):
    """`forward(feats)` -> (cls_scores, bbox_preds, kernel_preds, mask_feat): lists over the
    levels of logits (B,C,H,W), distances in input pixels (B,4,H,W) and dynamic-conv parameters
    (B,169,H,W); mask_feat (B,num_prototypes,H0,W0) at the first level's stride."""

    def __init__(self, num_classes: int = 80, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 2, strides: tuple[int, ...] = (8, 16, 32),
                 share_conv: bool = True, num_prototypes: int = 8, dyconv_channels: int = 8,
                 num_dyconvs: int = 3, mask_loss_stride: int = MASK_LOSS_STRIDE, **bn):
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.num_prototypes = num_prototypes
        self.dyconv_channels = dyconv_channels
        self.num_dyconvs = num_dyconvs
        self.mask_loss_stride = mask_loss_stride
        self.weight_nums, self.bias_nums = dynamic_param_sizes(num_prototypes, dyconv_channels,
                                                               num_dyconvs)
        self.num_gen_params = sum(self.weight_nums) + sum(self.bias_nums)

        def tower():
            return nn.ModuleList(ConvModule(in_channels if i == 0 else feat_channels,
                                            feat_channels, 3, **bn)
                                 for i in range(stacked_convs))

        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.kernel_convs = nn.ModuleList()
        self.rtm_cls = nn.ModuleList()
        self.rtm_reg = nn.ModuleList()
        self.rtm_kernel = nn.ModuleList()
        for _ in self.strides:
            cls_tower = tower()
            self.cls_convs.append(cls_tower)
            self.reg_convs.append(cls_tower)  # the reference's layout: one tower, two names
            self.kernel_convs.append(tower())
            self.rtm_cls.append(nn.Conv2d(feat_channels, num_classes, 1))
            self.rtm_reg.append(nn.Conv2d(feat_channels, 4, 1))
            self.rtm_kernel.append(nn.Conv2d(feat_channels, self.num_gen_params, 1))
        if share_conv:
            for n in range(1, len(self.strides)):
                for i in range(stacked_convs):
                    self.cls_convs[n][i].conv = self.cls_convs[0][i].conv
        self.mask_head = MaskFeatModule(in_channels, feat_channels, 4, len(self.strides),
                                        num_prototypes, **bn)
        self.init_weights()

    def init_weights(self) -> None:
        """As the reference: every conv N(0, 0.01) with zero bias (mask head included), norms
        1/0, classifier bias for prior 0.01, regression bias 1."""
        init_head_modules(self)
        for cls, reg in zip(self.rtm_cls, self.rtm_reg):
            nn.init.constant_(cls.bias, bias_init_with_prob(0.01))
            nn.init.constant_(reg.bias, 1.0)

    def forward_level(self, x: torch.Tensor, level: int):
        cls_feat = x
        for layer in self.cls_convs[level]:
            cls_feat = layer(cls_feat)
        kernel_feat = x
        for layer in self.kernel_convs[level]:
            kernel_feat = layer(kernel_feat)
        # reg_convs[level] is cls_convs[level]: the regression features equal cls_feat
        reg = F.relu(self.rtm_reg[level](cls_feat)) * self.strides[level]
        return self.rtm_cls[level](cls_feat), reg, self.rtm_kernel[level](kernel_feat)

    def forward(self, feats):
        mask_feat = self.mask_head(feats)
        cls_scores, bbox_preds, kernel_preds = [], [], []
        for level, x in enumerate(feats):
            c, r, k = self.forward_level(x, level)
            cls_scores.append(c)
            bbox_preds.append(r)
            kernel_preds.append(k)
        return cls_scores, bbox_preds, kernel_preds, mask_feat

    # ------------------------------------------------------------------ dynamic convs
    def mask_logits(self, mask_feat: torch.Tensor, kernels: torch.Tensor,
                    priors: torch.Tensor) -> torch.Tensor:
        """One image's prototypes (P,h,w), instance kernels (n,169) and their priors
        (n,4: x, y, stride_x, stride_y) -> mask logits (n,h,w) at the prototypes' stride."""
        return dynamic_mask_logits(mask_feat, kernels, priors, self.weight_nums, self.bias_nums,
                                   self.dyconv_channels, self.strides[0])
