"""RTMDet: backbone -> neck -> head. `forward` gives the raw head maps; `predict` runs the one
inference loop (`rtmdet.inference`) with this model as its PyTorch backend. The head, decoding
and post-processing come from the model's task family (`rtmdet.families`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig, TestConfig
from ..data.coco_classes import COCO_CLASSES
from ..data.letterbox import ImageMeta, letterbox_batch
from ..detections import Detections
from ..families import get_family
from .backbone import CSPNeXt
from .layers import ConvModule, fuse_conv_bn
from .neck import CSPNeXtPAFPN


class RTMDet(nn.Module):
    """An RTMDet model of any task family. Attribute names match the official checkpoints."""

    def __init__(self, cfg: ModelConfig, test_cfg: TestConfig | None = None,
                 class_names: Sequence[str] | None = None):
        super().__init__()
        self.cfg = cfg
        self.family = get_family(cfg.family)
        self.test_cfg = test_cfg or default_test_config(cfg)
        if class_names is None:  # the family's dataset (COCO; DOTA for rotated) when the count fits
            known = getattr(self.family, "default_class_names", COCO_CLASSES)
            class_names = known if cfg.num_classes == len(known) else [str(i) for i in range(cfg.num_classes)]
        self.class_names = list(class_names)
        bn = dict(bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        self.backbone = CSPNeXt(cfg.deepen_factor, cfg.widen_factor, cfg.expand_ratio,
                                cfg.channel_attention, **bn)
        self.neck = CSPNeXtPAFPN(cfg.neck_in_channels, cfg.neck_out_channels, cfg.num_csp_blocks,
                                 cfg.expand_ratio, **bn)
        self.bbox_head = self.family.build_head(cfg, bn)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        self._init_backbone_neck()

    def _init_backbone_neck(self) -> None:
        """The reference's Kaiming-uniform init (a=sqrt(5), fan_in) is PyTorch's default for the
        conv weights; its biases (only the channel-attention convs have one) start at zero."""
        for part in (self.backbone, self.neck):
            for m in part.modules():
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ raw network
    def extract_feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor):
        """Normalized (B,3,H,W) batch -> the head's raw outputs, lists over strides 8/16/32
        (RTMDet-Ins adds kernel maps and the prototypes)."""
        return self.bbox_head(self.extract_feats(x))

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) BGR pixel values -> normalized float input (the reference preprocessor).
        One float copy, normalized in place: the same values as `(x.float() - mean) / std`
        without its two more batch-sized buffers (on the CPU fresh memory each batch: 2.6x
        at batch 8 and 32, benchmarks/bench_e2e.py's "pre")."""
        return batch_uint8.to(torch.float32, copy=True).sub_(self.mean).div_(self.std)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ inference
    def preprocess(self, images: list[np.ndarray], imgsz: int | None = None):
        """Letterbox each BGR image; returns the normalized batch and an `ImageMeta` each."""
        size = imgsz or self.test_cfg.imgsz
        size = (size, size) if isinstance(size, int) else tuple(size)
        arr, metas = letterbox_batch(images, size)
        return self.normalize(torch.from_numpy(arr).to(self.device)), metas

    def decode(self, outputs, input_hw) -> dict[str, torch.Tensor]:
        return self.family.decode(outputs, input_hw, self.cfg)

    def postprocess(self, outputs, metas: list[ImageMeta], cfg: TestConfig) -> list[Detections]:
        """Raw head outputs of a batch -> `Detections` per image (the family's post-processing)."""
        decoded = self.decode(outputs, metas[0].img_shape)
        return self.family.postprocess(decoded, metas, cfg, self.cfg, self.class_names)

    def predict(self, images, score_thr: float | None = None, nms_iou: float | None = None,
                max_per_img: int | None = None, nms_pre: int | None = None,
                batch_size: int = 8, imgsz: int | None = None,
                mask_thr: float | None = None, tile: int | None = None,
                overlap: int = 200, fuse: bool = False, half: bool | str = False,
                compile: bool = False, cuda_graph: bool = False,
                preprocess: str = "cpu", classes=None, tta: bool = False,
                channels_last: bool | None = None) -> list[Detections] | Detections:
        """Detect objects in a path, a BGR uint8 array, a PIL image, or a list of them.

        Returns one `Detections` per image (a single one for a single input), boxes in original
        pixels (and `masks` for RTMDet-Ins, binarised at `mask_thr`). Unset knobs fall back to
        `self.test_cfg` (the reference test settings). `tile=1024, overlap=200`: large images
        are predicted in overlapping `tile` x `tile` windows (each letterboxed to `imgsz`),
        merged with the family's NMS (`rtmdet.inference.tiling`). `classes` (indices or names):
        detect only those, as a model of only those classes would (`rtmdet.inference.classes`).
        `tta=True`: the reference's test-time augmentation (`rtmdet_tta.py`: 3 scales x flip,
        merged by NMS at 0.6 keeping 100; detection models; `rtmdet.inference.tta`).

        Speed (`rtmdet.inference.speed.SpeedOptions`; all off = the exact reference path):
        `fuse` folds BatchNorm into the convs (on the CPU with channels-last: NHWC
        convolutions), `half` runs fp16 (True) or bf16 ("bf16") with channels-last on CUDA,
        `channels_last` sets NHWC explicitly, `compile` uses torch.compile, `cuda_graph`
        replays a captured graph per input shape (CUDA), `preprocess="device"` letterboxes on
        the model's device.
        They run on a prepared copy of the model, kept until its weights change."""
        from ..inference import TorchBackend, run_inference
        from ..inference.speed import SpeedOptions
        options = SpeedOptions(fuse=fuse, half=half, channels_last=channels_last, compile=compile,
                               cuda_graph=cuda_graph, preprocess=preprocess)
        was_training = self.training
        self.eval()
        try:
            return run_inference(TorchBackend(self, options), images, batch_size=batch_size, tile=tile,
                                 overlap=overlap, score_thr=score_thr, nms_iou=nms_iou,
                                 max_per_img=max_per_img, nms_pre=nms_pre, imgsz=imgsz,
                                 mask_thr=mask_thr, classes=classes, tta=tta)
        finally:
            self.train(was_training)

    def stream(self, source, batch_size: int = 8, vid_stride: int = 1, on_skip=None, **knobs):
        """`Frame`s (source, image, detections) of every image and video frame `source`
        names (a path, folder, glob, video, URL, camera index, or a list of these), one at a
        time, predicted in batches with `predict`'s `knobs`; see `rtmdet.inference.stream`."""
        from ..inference.stream import stream
        return stream(self, source, batch_size=batch_size, vid_stride=vid_stride, on_skip=on_skip,
                      **knobs)

    # ------------------------------------------------------------------ speed
    def fuse(self) -> "RTMDet":
        """Fold every BatchNorm into its conv (inference only; outputs unchanged up to rounding)."""
        self.eval()
        for m in self.modules():
            if isinstance(m, ConvModule) and isinstance(m.bn, nn.BatchNorm2d):
                m.conv = fuse_conv_bn(m.conv, m.bn)
                m.bn = nn.Identity()
        return self


def default_test_config(cfg: ModelConfig) -> TestConfig:
    """The released model's test settings for `cfg`'s family and size (any class count)."""
    from ..presets import default_test_for
    return default_test_for(cfg)
