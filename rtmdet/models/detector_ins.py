"""RTMDet-Ins: an `RTMDet` of the "segment" family (kept as a name users import)."""
from __future__ import annotations

import dataclasses

from ..config import ModelConfig, TestConfig
from .detector import RTMDet


class RTMDetIns(RTMDet):
    """The RTMDet-Ins instance segmenter: `forward` returns (cls_scores, bbox_preds,
    kernel_preds, mask_feat); `predict` adds (N,H,W) bool masks at the original resolution."""

    def __init__(self, cfg: ModelConfig, test_cfg: TestConfig | None = None, class_names=None):
        if cfg.family != "segment":
            cfg = dataclasses.replace(cfg, family="segment")
        super().__init__(cfg, test_cfg, class_names)
