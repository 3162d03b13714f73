"""RTMDet-Ins mask math, written once for the model, the loss and exported graphs: the sizes of
the per-instance dynamic 1x1 convs, the convs themselves (as matmuls, so they trace to ONNX with
dynamic shapes), and the reference's mask finishing (upsample, crop, threshold)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# instances whose masks are upsampled together (bounds the memory of large originals)
MASK_CHUNK = 16


def dynamic_param_sizes(num_prototypes: int = 8, dyconv_channels: int = 8,
                        num_dyconvs: int = 3) -> tuple[list[int], list[int]]:
    """Weight and bias sizes of the per-instance dynamic 1x1 convs (first layer sees the
    prototypes plus 2 relative-coordinate channels; the last one outputs 1 channel)."""
    weights, biases = [], []
    for i in range(num_dyconvs):
        cin = num_prototypes + 2 if i == 0 else dyconv_channels
        cout = 1 if i == num_dyconvs - 1 else dyconv_channels
        weights.append(cin * cout)
        biases.append(cout)
    return weights, biases


def batched_dynamic_mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor,
                                priors: torch.Tensor, weight_nums: list[int],
                                bias_nums: list[int], dyconv_channels: int = 8,
                                feat_stride: int = 8) -> torch.Tensor:
    """Per instance: relative coordinates ((prior - cell point) / (prior stride * 8), x then y)
    stacked before the prototypes, then the instance's dynamic 1x1 convs (ReLU between); the
    flat kernel layout is all weights first, then all biases.

    mask_feat (B,P,h,w); kernels (B,K,params); priors (B,K,>=3: x, y, stride) -> (B,K,h,w)."""
    b, _, h, w = mask_feat.shape  # traced as sizes: dynamic in an export
    ys = torch.arange(h, device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    xs = torch.arange(w, device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coord = torch.stack([xx.reshape(-1), yy.reshape(-1)], 0)  # (2, hw), x then y
    norm = (priors[..., 2:3] * 8).unsqueeze(-1)  # (B,K,1,1)
    rel = (priors[..., :2].unsqueeze(-1) - coord) / norm  # (B,K,2,hw)
    feat = mask_feat.flatten(2)  # (B,P,hw)
    layers = len(weight_nums)
    offsets = [0]
    for n in list(weight_nums) + list(bias_nums):
        offsets.append(offsets[-1] + n)
    x = rel
    for i in range(layers):
        out = dyconv_channels if i < layers - 1 else 1
        wt = kernels[..., offsets[i]:offsets[i + 1]].unflatten(-1, (out, -1))  # (B,K,out,in)
        bias = kernels[..., offsets[layers + i]:offsets[layers + i + 1]].unsqueeze(-1)
        if i == 0:  # input channels: 2 relative coordinates, then the prototypes
            x = torch.matmul(wt[..., :2], rel) + torch.matmul(wt[..., 2:], feat.unsqueeze(1)) + bias
        else:
            x = torch.matmul(wt, x) + bias
        if i < layers - 1:
            x = torch.relu(x)
    return x.squeeze(2).reshape(b, kernels.shape[1], h, w)


def dynamic_mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor, priors: torch.Tensor,
                        weight_nums: list[int], bias_nums: list[int], dyconv_channels: int = 8,
                        feat_stride: int = 8) -> torch.Tensor:
    """One image: mask_feat (P,h,w), kernels (n,params), priors (n,>=3) -> logits (n,h,w)."""
    return batched_dynamic_mask_logits(mask_feat[None], kernels[None], priors[None], weight_nums,
                                       bias_nums, dyconv_channels, feat_stride)[0]


def logits_to_masks(logits: torch.Tensor, ori_shape: tuple[int, int],
                    scale_factor: tuple[float, float], stride: int = 8,
                    mask_thr: float = 0.5) -> torch.Tensor:
    """Mask logits (n, h, w) at `stride` -> (n, ori_h, ori_w) bool masks, in the reference's order
    of operations: bilinear x`stride` to the (padded) input, bilinear to ceil(input size / scale
    factor) (note: the reference scales the height by 1/w_scale and the width by 1/h_scale), crop
    the top-left original size, sigmoid, threshold."""
    ori_h, ori_w = (int(v) for v in ori_shape[:2])
    n = logits.shape[0]
    out = torch.zeros((n, ori_h, ori_w), dtype=torch.bool, device=logits.device)
    if n == 0:
        return out
    inv = [1 / s for s in scale_factor]
    in_h, in_w = logits.shape[-2] * stride, logits.shape[-1] * stride
    out_size = [math.ceil(in_h * inv[0]), math.ceil(in_w * inv[1])]
    for start in range(0, n, MASK_CHUNK):
        x = logits[start:start + MASK_CHUNK].unsqueeze(0)
        x = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
        x = x[..., :ori_h, :ori_w]
        out[start:start + MASK_CHUNK] = x.sigmoid().squeeze(0) > mask_thr
    return out
