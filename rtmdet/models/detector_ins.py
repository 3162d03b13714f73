"""RTMDet-Ins: RTMDet with a mask head; `predict` adds (N,H,W) bool masks at original resolution."""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..config import ModelConfig, TestConfig
from ..detections import Detections
from ..ops.boxes import grid_priors
from ..ops.postprocess import postprocess_single
from .detector import RTMDet
from .head_ins import RTMDetInsSepBNHead

# instances whose masks are upsampled together (bounds the memory of large originals)
MASK_CHUNK = 16


class RTMDetIns(RTMDet):
    """The RTMDet-Ins instance segmenter. `forward` returns (cls_scores, bbox_preds,
    kernel_preds, mask_feat) as the reference head does."""

    def _make_head(self, cfg: ModelConfig, bn: dict) -> RTMDetInsSepBNHead:
        return RTMDetInsSepBNHead(cfg.num_classes, cfg.neck_out_channels, cfg.feat_channels,
                                  cfg.stacked_convs, cfg.strides, cfg.share_conv,
                                  cfg.num_prototypes, cfg.dyconv_channels, cfg.num_dyconvs, **bn)

    def predict(self, images, *args, mask_thr: float | None = None, **kwargs):
        """As `RTMDet.predict`; the `Detections` also carry `masks` (N,H,W) bool at the original
        resolution. `mask_thr` (default `test_cfg.mask_thr`, 0.5) binarises sigmoid(mask)."""
        if mask_thr is None:
            return super().predict(images, *args, **kwargs)
        saved = self.test_cfg
        self.test_cfg = dataclasses.replace(saved, mask_thr=float(mask_thr))
        try:
            return super().predict(images, *args, **kwargs)
        finally:
            self.test_cfg = saved

    def postprocess(self, outputs, metas: list[dict], cfg: TestConfig) -> list[Detections]:
        cls_scores, bbox_preds, kernel_preds, mask_feat = outputs
        sizes = [c.shape[-2:] for c in cls_scores]
        dtype, device = cls_scores[0].dtype, cls_scores[0].device
        priors_lv = grid_priors(sizes, self.cfg.strides, dtype, device, with_stride=True)
        priors = [p[:, :2] for p in priors_lv]  # (x, y) for decoding, (x, y, stride) for masks
        priors_s = torch.cat(priors_lv)
        results = []
        for i, meta in enumerate(metas):
            raw = postprocess_single([c[i] for c in cls_scores], [b[i] for b in bbox_preds],
                                     priors, meta["img_shape"], meta["scale_factor"], cfg)
            kernels = torch.cat([k[i].permute(1, 2, 0).reshape(-1, k.shape[1])
                                 for k in kernel_preds])
            masks = self.predict_masks(mask_feat[i], kernels[raw.prior_inds],
                                       priors_s[raw.prior_inds], meta, cfg.mask_thr)
            results.append(Detections(raw.boxes, raw.scores, raw.labels, self.class_names,
                                      masks=masks, image_shape=tuple(meta["ori_shape"])))
        return results

    def predict_masks(self, mask_feat: torch.Tensor, kernels: torch.Tensor,
                      priors: torch.Tensor, meta: dict, mask_thr: float = 0.5) -> torch.Tensor:
        """Kept instances -> (n, ori_h, ori_w) bool masks: dynamic convs at stride 8, then
        `logits_to_masks` (the reference's upsample / crop / threshold)."""
        ori_h, ori_w = (int(v) for v in meta["ori_shape"][:2])
        if kernels.shape[0] == 0:
            return torch.zeros((0, ori_h, ori_w), dtype=torch.bool, device=mask_feat.device)
        logits = self.bbox_head.mask_logits(mask_feat, kernels, priors)
        return logits_to_masks(logits, meta, self.cfg.strides[0], mask_thr)


def logits_to_masks(logits: torch.Tensor, meta: dict, stride: int = 8,
                    mask_thr: float = 0.5) -> torch.Tensor:
    """Mask logits (n, h, w) at `stride` -> (n, ori_h, ori_w) bool masks, in the reference's order
    of operations: bilinear x`stride` to the (padded) input, bilinear to ceil(input size / scale
    factor) (note: the reference scales the height by 1/w_scale and the width by 1/h_scale), crop
    the top-left original size, sigmoid, threshold. Shared by the PyTorch model and the exported
    graph backends (`rtmdet.deploy.backends`)."""
    ori_h, ori_w = (int(v) for v in meta["ori_shape"][:2])
    n = logits.shape[0]
    out = torch.zeros((n, ori_h, ori_w), dtype=torch.bool, device=logits.device)
    if n == 0:
        return out
    inv = [1 / s for s in meta["scale_factor"]]
    in_h, in_w = logits.shape[-2] * stride, logits.shape[-1] * stride
    out_size = [math.ceil(in_h * inv[0]), math.ceil(in_w * inv[1])]
    for start in range(0, n, MASK_CHUNK):
        x = logits[start:start + MASK_CHUNK].unsqueeze(0)
        x = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
        x = x[..., :ori_h, :ori_w]
        out[start:start + MASK_CHUNK] = x.sigmoid().squeeze(0) > mask_thr
    return out
