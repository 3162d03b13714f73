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

from .head import bias_init_with_prob, init_head_modules
from .layers import ConvModule


def dynamic_param_sizes(num_prototypes: int = 8, dyconv_channels: int = 8,
                        num_dyconvs: int = 3) -> tuple[list[int], list[int]]:
    """Weight and bias sizes of the per-instance dynamic 1x1 convs (first layer sees the
    prototypes plus 2 relative-coordinate channels; the last one outputs 1 channel)."""
    weights, biases = [], []
    for i in range(num_dyconvs):
        if i == 0:
            weights.append((num_prototypes + 2) * dyconv_channels)
            biases.append(dyconv_channels)
        elif i == num_dyconvs - 1:
            weights.append(dyconv_channels)
            biases.append(1)
        else:
            weights.append(dyconv_channels * dyconv_channels)
            biases.append(dyconv_channels)
    return weights, biases


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
                 num_dyconvs: int = 3, mask_loss_stride: int = 4, **bn):
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
    def parse_dynamic_params(self, kernels: torch.Tensor):
        """(n, 169) -> per layer grouped-conv weights (n*out, in, 1, 1) and biases (n*out,)."""
        return parse_dynamic_params(kernels, self.weight_nums, self.bias_nums,
                                    self.dyconv_channels)

    def mask_logits(self, mask_feat: torch.Tensor, kernels: torch.Tensor,
                    priors: torch.Tensor) -> torch.Tensor:
        """One image's prototypes (P,h,w), instance kernels (n,169) and their priors
        (n,4: x, y, stride_x, stride_y) -> mask logits (n,h,w) at the prototypes' stride."""
        return dynamic_mask_logits(mask_feat, kernels, priors, self.weight_nums, self.bias_nums,
                                   self.dyconv_channels, self.strides[0])


def parse_dynamic_params(kernels: torch.Tensor, weight_nums: list[int], bias_nums: list[int],
                         dyconv_channels: int = 8):
    """(n, sum of sizes) -> per layer grouped-conv weights (n*out, in, 1, 1) and biases
    (n*out,); the flat layout is all weights first, then all biases."""
    n = kernels.shape[0]
    parts = list(torch.split(kernels, list(weight_nums) + list(bias_nums), dim=1))
    layers = len(weight_nums)
    weights, biases = parts[:layers], parts[layers:]
    for i in range(layers):
        out = dyconv_channels if i < layers - 1 else 1
        weights[i] = weights[i].reshape(n * out, -1, 1, 1)
        biases[i] = biases[i].reshape(n * out)
    return weights, biases


def dynamic_mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor, priors: torch.Tensor,
                        weight_nums: list[int], bias_nums: list[int], dyconv_channels: int = 8,
                        feat_stride: int = 8) -> torch.Tensor:
    """Per instance: relative coordinates ((prior - cell point) / (prior stride * 8), x then y)
    stacked before the prototypes, then the instance's dynamic 1x1 convs (ReLU between).

    mask_feat (P,h,w) at `feat_stride`; kernels (n, params); priors (n, 4) -> logits (n,h,w)."""
    n = priors.shape[0]
    h, w = mask_feat.shape[-2:]
    if n == 0:
        return mask_feat.new_empty((0, h, w))
    ys = torch.arange(h, device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    xs = torch.arange(w, device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coord = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1).reshape(1, -1, 2)
    points = priors[:, :2].reshape(-1, 1, 2)
    norm = priors[:, 2].reshape(-1, 1, 1) * 8
    rel = ((points - coord).permute(0, 2, 1) / norm).reshape(n, 2, h, w)
    x = torch.cat([rel, mask_feat.unsqueeze(0).expand(n, -1, -1, -1)], dim=1)
    x = x.reshape(1, -1, h, w)
    weights, biases = parse_dynamic_params(kernels, weight_nums, bias_nums, dyconv_channels)
    for i, (wt, b) in enumerate(zip(weights, biases)):
        x = F.conv2d(x, wt, b, groups=n)
        if i < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(n, h, w)


def batched_dynamic_mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor,
                                priors: torch.Tensor, weight_nums: list[int],
                                bias_nums: list[int], dyconv_channels: int = 8,
                                feat_stride: int = 8) -> torch.Tensor:
    """`dynamic_mask_logits` for a batch with a fixed number of instances per image, written with
    matmuls only (no grouped conv, no data-dependent shapes) so it exports to ONNX.

    mask_feat (B,P,h,w); kernels (B,K,params); priors (B,K,>=3: x, y, stride) -> (B,K,h,w)."""
    shape = torch._shape_as_tensor(mask_feat)  # traced: h, w stay dynamic in an export
    ys = torch.arange(shape[2], device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    xs = torch.arange(shape[3], device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coord = torch.stack([xx.reshape(-1), yy.reshape(-1)], 0)  # (2, hw), x then y
    norm = (priors[..., 2:3] * 8).unsqueeze(-1)  # (B,K,1,1)
    rel = (priors[..., :2].unsqueeze(-1) - coord) / norm  # (B,K,2,hw)
    feat = mask_feat.flatten(2)  # (B,P,hw)
    layers = len(weight_nums)
    offsets = [0]
    for n in list(weight_nums) + list(bias_nums):
        offsets.append(offsets[-1] + n)
    x = None
    for i in range(layers):
        out = dyconv_channels if i < layers - 1 else 1
        wt = kernels[..., offsets[i]:offsets[i + 1]].unflatten(-1, (out, -1))  # (B,K,out,in)
        b = kernels[..., offsets[layers + i]:offsets[layers + i + 1]].unsqueeze(-1)  # (B,K,out,1)
        if i == 0:  # input channels: 2 relative coordinates, then the prototypes
            x = torch.matmul(wt[..., :2], rel) + torch.matmul(wt[..., 2:], feat.unsqueeze(1)) + b
        else:
            x = torch.matmul(wt, x) + b
        if i < layers - 1:
            x = torch.relu(x)
    b, p, h, w = mask_feat.shape  # traced as sizes: dynamic in an export
    return x.squeeze(2).reshape(b, kernels.shape[1], h, w)
