"""Building blocks of CSPNeXt; attribute names follow the official checkpoint keys."""
from __future__ import annotations

import torch
from torch import nn


class ConvModule(nn.Module):
    """conv (no bias) -> BatchNorm -> SiLU, stored as `.conv`, `.bn` (keys `<name>.conv.weight`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, act: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k ConvModule followed by a pointwise 1x1 ConvModule."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 **bn):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, stride,
                                         groups=in_channels, **bn)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ChannelAttention(nn.Module):
    """Squeeze-excite style gate: global mean (in float32) -> 1x1 conv -> hard sigmoid -> scale."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.float().mean(dim=(2, 3), keepdim=True).to(x.dtype)
        return x * self.act(self.fc(pooled))


class CSPNeXtBlock(nn.Module):
    """3x3 conv then a 5x5 depthwise-separable conv, with an optional residual."""

    def __init__(self, in_channels: int, out_channels: int, add_identity: bool = True,
                 kernel_size: int = 5, expansion: float = 1.0, **bn):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvModule(in_channels, hidden, 3, **bn)
        self.conv2 = DepthwiseSeparableConv(hidden, out_channels, kernel_size, **bn)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer: a main path of blocks and a 1x1 shortcut, joined by 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 1,
                 add_identity: bool = True, channel_attention: bool = False,
                 expand_ratio: float = 0.5, **bn):
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvModule(in_channels, mid, 1, **bn)
        self.short_conv = ConvModule(in_channels, mid, 1, **bn)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, **bn)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, add_identity, **bn)
                                      for _ in range(num_blocks)])
        self.channel_attention = channel_attention
        if channel_attention:
            self.attention = ChannelAttention(2 * mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.channel_attention:
            y = self.attention(y)
        return self.final_conv(y)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling with max-pools 5, 9, 13, computed as three chained 5x5 pools
    (SPPF): max-pooling composes exactly, so outputs equal the parallel form, at a third the cost."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, **bn):
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvModule(in_channels, mid, 1, **bn)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.conv2 = ConvModule(mid * 4, out_channels, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        p3 = self.pool(p2)
        return self.conv2(torch.cat((x, p1, p2, p3), dim=1))


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv with the (eval-mode) BatchNorm folded into its weight and bias."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused
