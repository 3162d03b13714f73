"""Shared by the backends that run an exported graph (ONNX Runtime, TensorRT, OpenVINO): the
rtmdet metadata the export wrote (model config, class names, test settings, NMS knobs)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config import ModelConfig, TestConfig
from ..data.coco_classes import COCO_CLASSES
from ..families import get_family
from .backend import Backend
from .loop import letterbox_input


META_KEY = "rtmdet"  # the ONNX metadata_props entry holding our JSON metadata


def read_onnx_metadata(path) -> dict:
    """The `rtmdet` metadata an exported ONNX file carries ({} when absent)."""
    import json

    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return {}


def model_config_from_meta(meta: dict) -> ModelConfig:
    """The exported model's config (rtmdet >= 0.2 stores it whole; 0.1 stored its parts)."""
    if "model" in meta:
        return ModelConfig.from_saved(meta["model"])
    mh = meta.get("mask_head") or {}
    return ModelConfig(num_classes=meta["num_classes"], strides=tuple(meta["strides"]),
                       family="segment" if meta.get("with_mask") else "detect", **mh)


class GraphBackend(Backend):
    path: str = ""
    output_names: list[str]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def setup(self, meta: dict, input_shape) -> None:
        if not meta:
            raise ValueError(f"{self.path}: no rtmdet metadata; export it with `rtmdet export`")
        self.meta = meta
        self.model_cfg = model_config_from_meta(meta)
        self.family = get_family(self.model_cfg.family)
        self.class_names = meta.get("class_names") or list(COCO_CLASSES)
        tc = {k: v for k, v in meta.get("test_cfg", {}).items()
              if k in {f.name for f in dataclasses.fields(TestConfig)}}
        self.test_cfg = TestConfig(**tc)
        self.has_nms = bool(meta["nms"])
        if self.has_nms:  # the graph's baked-in knobs are the defaults
            self.test_cfg = dataclasses.replace(self.test_cfg, score_thr=meta["score_thr"],
                                                nms_iou=meta["nms_iou"], max_per_img=meta["max_det"],
                                                nms_pre=meta["nms_pre"])
        b, _, h, w = input_shape
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.fixed_size = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 else None
        if self.fixed_size:  # a static graph runs at its exported size
            self.test_cfg = dataclasses.replace(self.test_cfg, imgsz=h if h == w else (h, w))

    def preprocess(self, images, size):
        arr, metas = letterbox_input(images, size, self.fixed_batch)
        return arr.astype(np.float32), metas

    def outputs(self, raw) -> dict:
        return dict(zip(self.output_names, (torch.as_tensor(np.asarray(o)) for o in raw)))

    def check_cfg(self, cfg: TestConfig) -> None:
        if not self.has_nms:
            return
        m = self.meta
        if cfg.nms_iou != m["nms_iou"] or cfg.nms_pre != m["nms_pre"]:
            raise ValueError(f"{self.path} has NMS in the graph (nms_iou={m['nms_iou']}, "
                             f"nms_pre={m['nms_pre']}); re-export to change them")
        if cfg.score_thr < m["score_thr"] or cfg.max_per_img > m["max_det"]:
            raise ValueError(f"{self.path} has NMS in the graph (score_thr={m['score_thr']}, "
                             f"max_det={m['max_det']}); only a higher score_thr or lower "
                             f"max_per_img can be applied afterwards")
