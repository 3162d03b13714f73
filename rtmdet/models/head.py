"""RTMDetSepBNHead: per-level towers whose convs are shared across levels but whose BNs are not."""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import ConvModule


def bias_init_with_prob(prior_prob: float) -> float:
    """Bias that makes sigmoid(bias) == prior_prob (focal-loss style initialisation)."""
    return float(-math.log((1 - prior_prob) / prior_prob))


def init_head_modules(head: nn.Module) -> None:
    """The reference head init: every conv N(0, 0.01) with zero bias, every BN weight 1, bias 0."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class RTMDetSepBNHead(nn.Module):
    """Classification and distance-regression towers for strides 8/16/32.

    `forward` returns logits (B,C,H,W) and distances (B,4,H,W) in input pixels (x stride)."""

    def __init__(self, num_classes: int = 80, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 2, strides: tuple[int, ...] = (8, 16, 32),
                 share_conv: bool = True, exp_on_reg: bool = False, **bn):
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.exp_on_reg = exp_on_reg
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.rtm_cls = nn.ModuleList()
        self.rtm_reg = nn.ModuleList()
        for _ in self.strides:
            self.cls_convs.append(self._tower(in_channels, feat_channels, stacked_convs, bn))
            self.reg_convs.append(self._tower(in_channels, feat_channels, stacked_convs, bn))
            self.rtm_cls.append(nn.Conv2d(feat_channels, num_classes, 1))
            self.rtm_reg.append(nn.Conv2d(feat_channels, 4, 1))
        if share_conv:  # later levels use level 0's conv weights; each keeps its own BN
            for n in range(1, len(self.strides)):
                for i in range(stacked_convs):
                    self.cls_convs[n][i].conv = self.cls_convs[0][i].conv
                    self.reg_convs[n][i].conv = self.reg_convs[0][i].conv
        self.init_weights()

    @staticmethod
    def _tower(cin: int, feat: int, n: int, bn: dict) -> nn.ModuleList:
        return nn.ModuleList(ConvModule(cin if i == 0 else feat, feat, 3, **bn) for i in range(n))

    def init_weights(self) -> None:
        init_head_modules(self)
        for cls in self.rtm_cls:
            nn.init.constant_(cls.bias, bias_init_with_prob(0.01))

    def features(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The classification and regression towers' outputs for one level."""
        cls_feat, reg_feat = x, x
        for layer in self.cls_convs[level]:
            cls_feat = layer(cls_feat)
        for layer in self.reg_convs[level]:
            reg_feat = layer(reg_feat)
        return cls_feat, reg_feat

    def distances(self, reg_feat: torch.Tensor, level: int) -> torch.Tensor:
        """(l, t, r, b) in input pixels: x stride, exp'd first when `exp_on_reg`."""
        reg = self.rtm_reg[level](reg_feat)
        if self.exp_on_reg:
            reg = reg.exp()
        return reg * self.strides[level]

    def forward_level(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        cls_feat, reg_feat = self.features(x, level)
        return self.rtm_cls[level](cls_feat), self.distances(reg_feat, level)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores, bbox_preds = [], []
        for level, x in enumerate(feats):
            c, r = self.forward_level(x, level)
            cls_scores.append(c)
            bbox_preds.append(r)
        return cls_scores, bbox_preds
