"""RTMDet: backbone -> neck -> head; `forward` gives raw maps, `predict` gives Detections."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..config import ModelConfig, TestConfig, default_test_config
from ..data.coco_classes import COCO_CLASSES
from ..data.letterbox import MEAN_BGR, STD_BGR, letterbox_batch
from ..detections import Detections
from ..ops.boxes import grid_priors
from ..ops.postprocess import postprocess_single
from .backbone import CSPNeXt
from .head import RTMDetSepBNHead
from .layers import ConvModule, fuse_conv_bn
from .neck import CSPNeXtPAFPN


class ImageReadError(ValueError):
    """An input image could not be read or decoded."""


def read_image(src) -> np.ndarray:
    """A path or an HxWx3 uint8 BGR array -> HxWx3 uint8 BGR array, or ImageReadError."""
    if isinstance(src, np.ndarray):
        if src.ndim == 2:
            src = cv2.cvtColor(src, cv2.COLOR_GRAY2BGR)
        if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
            raise ImageReadError(f"expected an HxWx3 uint8 BGR array, got {src.dtype} {src.shape}")
        return src
    path = str(src)
    if not Path(path).is_file():
        raise ImageReadError(f"{path}: no such file")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unsupported format)")
    return img


class RTMDet(nn.Module):
    """The RTMDet detector. Attribute names match the official checkpoints."""

    def __init__(self, cfg: ModelConfig, test_cfg: TestConfig | None = None,
                 class_names: Sequence[str] | None = None):
        super().__init__()
        self.cfg = cfg
        self.test_cfg = test_cfg or default_test_config(cfg)
        if class_names is None:
            class_names = COCO_CLASSES if cfg.num_classes == 80 else [str(i) for i in range(cfg.num_classes)]
        self.class_names = list(class_names)
        bn = dict(bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        self.backbone = CSPNeXt(cfg.deepen_factor, cfg.widen_factor, cfg.expand_ratio,
                                cfg.channel_attention, **bn)
        self.neck = CSPNeXtPAFPN(cfg.neck_in_channels, cfg.neck_out_channels, cfg.num_csp_blocks,
                                 cfg.expand_ratio, **bn)
        self.bbox_head = self._make_head(cfg, bn)
        self.register_buffer("mean", torch.tensor(MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD_BGR).view(1, 3, 1, 1), persistent=False)
        self._init_backbone_neck()

    def _init_backbone_neck(self) -> None:
        """The reference's Kaiming-uniform init (a=sqrt(5), fan_in) is PyTorch's default for the
        conv weights; its biases (only the channel-attention convs have one) start at zero."""
        for part in (self.backbone, self.neck):
            for m in part.modules():
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _make_head(self, cfg: ModelConfig, bn: dict) -> nn.Module:
        return RTMDetSepBNHead(cfg.num_classes, cfg.neck_out_channels, cfg.feat_channels,
                               cfg.stacked_convs, cfg.strides, cfg.share_conv, cfg.exp_on_reg, **bn)

    # ------------------------------------------------------------------ raw network
    def extract_feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor):
        """Normalized (B,3,H,W) batch -> the head's raw outputs, lists over strides 8/16/32."""
        return self.bbox_head(self.extract_feats(x))

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) BGR pixel values -> normalized float input (the reference preprocessor)."""
        return (batch_uint8.float() - self.mean) / self.std

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ inference
    def preprocess(self, images: list[np.ndarray], imgsz: int | None = None):
        """Letterbox each BGR image; returns the normalized batch and per-image metadata."""
        size = imgsz or self.test_cfg.imgsz
        size = (size, size) if isinstance(size, int) else tuple(size)
        arr, metas = letterbox_batch(images, size)
        return self.normalize(torch.from_numpy(arr).to(self.device)), metas

    def postprocess(self, outputs, metas: list[dict], cfg: TestConfig) -> list[Detections]:
        cls_scores, bbox_preds = outputs[0], outputs[1]
        sizes = [c.shape[-2:] for c in cls_scores]
        priors = grid_priors(sizes, self.cfg.strides, cls_scores[0].dtype, cls_scores[0].device)
        results = []
        for i, meta in enumerate(metas):
            raw = postprocess_single([c[i] for c in cls_scores], [b[i] for b in bbox_preds],
                                     priors, meta["img_shape"], meta["scale_factor"], cfg)
            results.append(Detections(raw.boxes, raw.scores, raw.labels, self.class_names,
                                      image_shape=tuple(meta["ori_shape"])))
        return results

    def resolve_test_cfg(self, **overrides) -> TestConfig:
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self.test_cfg, **given)

    @torch.inference_mode()
    def predict(self, images, score_thr: float | None = None, nms_iou: float | None = None,
                max_per_img: int | None = None, nms_pre: int | None = None,
                batch_size: int = 8, imgsz: int | None = None) -> list[Detections] | Detections:
        """Detect objects in a path, a BGR uint8 array, or a list of them.

        Returns one `Detections` per image (a single one for a single input), boxes in original
        pixels. Unset knobs fall back to `self.test_cfg` (the reference test settings)."""
        single = isinstance(images, (str, Path, np.ndarray))
        items = [images] if single else list(images)
        cfg = self.resolve_test_cfg(score_thr=score_thr, nms_iou=nms_iou, max_per_img=max_per_img,
                                    nms_pre=nms_pre, imgsz=imgsz)
        was_training = self.training
        self.eval()
        results: list[Detections] = []
        try:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                imgs = [read_image(x) for x in chunk]
                batch, metas = self.preprocess(imgs, cfg.imgsz)
                dets = self.postprocess(self(batch), metas, cfg)
                for d, src in zip(dets, chunk):
                    d.source = None if isinstance(src, np.ndarray) else str(src)
                results.extend(dets)
        finally:
            self.train(was_training)
        return results[0] if single else results

    # ------------------------------------------------------------------ speed
    def fuse(self) -> "RTMDet":
        """Fold every BatchNorm into its conv (inference only; outputs unchanged up to rounding)."""
        self.eval()
        for m in self.modules():
            if isinstance(m, ConvModule) and isinstance(m.bn, nn.BatchNorm2d):
                m.conv = fuse_conv_bn(m.conv, m.bn)
                m.bn = nn.Identity()
        return self
