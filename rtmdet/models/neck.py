"""CSPNeXtPAFPN: top-down then bottom-up fusion of the three backbone levels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvModule, CSPLayer


class CSPNeXtPAFPN(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], out_channels: int, num_csp_blocks: int = 3,
                 expand_ratio: float = 0.5, **bn):
        super().__init__()
        self.in_channels = tuple(in_channels)
        n = len(in_channels)
        csp = dict(num_blocks=num_csp_blocks, add_identity=False, expand_ratio=expand_ratio, **bn)
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(n - 1, 0, -1):
            self.reduce_layers.append(ConvModule(in_channels[idx], in_channels[idx - 1], 1, **bn))
            self.top_down_blocks.append(CSPLayer(in_channels[idx - 1] * 2, in_channels[idx - 1], **csp))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(n - 1):
            self.downsamples.append(ConvModule(in_channels[idx], in_channels[idx], 3, stride=2, **bn))
            self.bottom_up_blocks.append(CSPLayer(in_channels[idx] * 2, in_channels[idx + 1], **csp))
        self.out_convs = nn.ModuleList(ConvModule(c, out_channels, 3, **bn) for c in in_channels)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.in_channels)
        inner = [inputs[-1]]
        for k, idx in enumerate(range(n - 1, 0, -1)):
            high = self.reduce_layers[k](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.top_down_blocks[k](torch.cat([up, inputs[idx - 1]], 1)))
        outs = [inner[0]]
        for idx in range(n - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner[idx + 1]], 1)))
        return [conv(o) for conv, o in zip(self.out_convs, outs)]
