"""RotatedRTMDetSepBNHead (RTMDet-R): the detection head plus a 1x1 angle branch per level.

Key layout of the official checkpoints: `cls_convs`, `reg_convs`, `rtm_cls`, `rtm_reg`, then
`rtm_ang.{0,1,2}` (1 output channel: mmrotate's `PseudoAngleCoder`, raw radians, no scale)."""
from __future__ import annotations

import torch
from torch import nn

from .head import RTMDetSepBNHead


class RotatedRTMDetSepBNHead(RTMDetSepBNHead):
    """`forward` returns (cls logits (B,C,H,W), distances l,t,r,b (B,4,H,W) in input pixels
    (x stride, exp'd first when `exp_on_reg`), raw angles (B,1,H,W)), each a list over levels.
    The angle branch reads the regression tower's features."""

    def __init__(self, num_classes: int = 15, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 2, strides: tuple[int, ...] = (8, 16, 32),
                 share_conv: bool = True, exp_on_reg: bool = False, angle_dim: int = 1, **bn):
        super().__init__(num_classes, in_channels, feat_channels, stacked_convs, strides,
                         share_conv, exp_on_reg, **bn)
        # registered after rtm_reg: the checkpoint order
        self.rtm_ang = nn.ModuleList(nn.Conv2d(feat_channels, angle_dim, 1) for _ in self.strides)
        for ang in self.rtm_ang:  # the reference: normal_init(std=0.01), bias 0
            nn.init.normal_(ang.weight, 0, 0.01)
            nn.init.zeros_(ang.bias)

    def forward_level(self, x: torch.Tensor, level: int):
        cls_feat, reg_feat = self.features(x, level)
        return (self.rtm_cls[level](cls_feat), self.distances(reg_feat, level),
                self.rtm_ang[level](reg_feat))

    def forward(self, feats: list[torch.Tensor]):
        outs = [self.forward_level(x, level) for level, x in enumerate(feats)]
        cls_scores, bbox_preds, angle_preds = (list(t) for t in zip(*outs))
        return cls_scores, bbox_preds, angle_preds
