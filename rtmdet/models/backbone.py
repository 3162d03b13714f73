"""CSPNeXt backbone (the P5 arch used by every RTMDet size)."""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvModule, CSPLayer, SPPBottleneck

# in, out, blocks, add_identity, spp -- scaled by widen/deepen factors
P5_ARCH = ((64, 128, 3, True, False), (128, 256, 6, True, False),
           (256, 512, 6, True, False), (512, 1024, 3, False, True))


class CSPNeXt(nn.Module):
    """Stem (three 3x3 convs) then four stages; returns the stride 8, 16, 32 feature maps."""

    def __init__(self, deepen_factor: float = 1.0, widen_factor: float = 1.0,
                 expand_ratio: float = 0.5, channel_attention: bool = True,
                 out_indices: tuple[int, ...] = (2, 3, 4), **bn):
        super().__init__()
        stem = int(P5_ARCH[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvModule(3, stem // 2, 3, stride=2, **bn),
            ConvModule(stem // 2, stem // 2, 3, **bn),
            ConvModule(stem // 2, stem, 3, **bn),
        )
        self.out_indices = out_indices
        self.frozen = 0  # leading PARTS kept as they are (`freeze`)
        self.out_channels = []
        for i, (cin, cout, n, add, spp) in enumerate(P5_ARCH):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            n = max(round(n * deepen_factor), 1)
            layers = [ConvModule(cin, cout, 3, stride=2, **bn)]
            if spp:
                layers.append(SPPBottleneck(cout, cout, **bn))
            layers.append(CSPLayer(cout, cout, n, add_identity=add,
                                   channel_attention=channel_attention,
                                   expand_ratio=expand_ratio, **bn))
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            if i + 1 in out_indices:
                self.out_channels.append(cout)

    PARTS = ("stem", "stage1", "stage2", "stage3", "stage4")

    def freeze(self, parts: int) -> None:
        """Fine-tuning on little data: the first `parts` of (stem, stage1..stage4) stop
        learning, their BatchNorm statistics included (kept in eval mode through `train()`),
        as the reference's `frozen_stages=parts - 1` (0: nothing; it never unfreezes)."""
        if not 0 <= parts <= len(self.PARTS):
            raise ValueError(f"freeze={parts}: must be between 0 and {len(self.PARTS)}")
        self.frozen = max(self.frozen, parts)
        for name in self.PARTS[:parts]:
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.PARTS[:self.frozen]:
            getattr(self, name).eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
