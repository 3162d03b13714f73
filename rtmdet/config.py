"""Typed configs: one dataclass per concept, presets for every released size."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml


# the reference data preprocessor's per-channel normalisation, in BGR order (no channel swap)
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)


@dataclass
class ModelConfig:
    """Architecture of one RTMDet variant (the numbers the original configs set)."""

    deepen_factor: float = 1.0
    widen_factor: float = 1.0
    neck_in_channels: tuple[int, int, int] = (256, 512, 1024)
    neck_out_channels: int = 256
    num_csp_blocks: int = 3
    feat_channels: int = 256
    exp_on_reg: bool = True
    num_classes: int = 80
    strides: tuple[int, int, int] = (8, 16, 32)
    stacked_convs: int = 2
    share_conv: bool = True
    channel_attention: bool = True
    expand_ratio: float = 0.5
    # The released configs use SyncBN/BN with PyTorch defaults (eps 1e-5, momentum 0.1).
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    mean: tuple[float, float, float] = MEAN_BGR
    std: tuple[float, float, float] = STD_BGR
    # The task family (rtmdet.families): "detect", "segment" (RTMDet-Ins) or "rotated".
    family: str = "detect"
    # RTMDet-Ins mask head
    num_prototypes: int = 8
    dyconv_channels: int = 8
    num_dyconvs: int = 3
    # RTMDet-R: angle representation of the decoded boxes (mmrotate's `angle_version`)
    angle_version: str = "le90"

    @classmethod
    def from_saved(cls, data: dict) -> "ModelConfig":
        """A config saved by any rtmdet version (0.1 wrote `with_mask` instead of `family`)."""
        data = dict(data)
        if "with_mask" in data:
            data.setdefault("family", "segment" if data.pop("with_mask") else "detect")
        return from_dict(cls, data)


@dataclass
class TestConfig:
    """Post-processing knobs (the reference `test_cfg`)."""

    score_thr: float = 0.001
    nms_pre: int = 30000
    nms_iou: float = 0.65
    max_per_img: int = 300
    min_bbox_size: float = 0.0
    mask_thr: float = 0.5
    imgsz: int = 640


# ---------------------------------------------------------------- YAML and key=value overrides

def to_dict(obj: Any) -> dict:
    """Dataclass -> plain dict (tuples as lists) fit for YAML."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v
    return conv(obj)


def from_dict(cls, data: dict):
    """Plain dict -> dataclass `cls`, recursing into nested dataclass fields; unknown keys fail."""
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in data.items():
        if k not in names:
            raise KeyError(f"{cls.__name__} has no field {k!r}")
        default = getattr(cls(), k) if _has_defaults(cls) else None
        if dataclasses.is_dataclass(default) and isinstance(v, dict):
            v = from_dict(type(default), v)
        elif isinstance(default, tuple) and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def _has_defaults(cls) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls))


def save_yaml(obj: Any, path) -> None:
    from .atomic import write_text
    write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def load_yaml(cls, path):
    with open(path) as f:
        return from_dict(cls, yaml.safe_load(f) or {})


def apply_overrides(obj: Any, overrides: list[str]):
    """Apply `a.b=value` strings (YAML-typed values) to a dataclass; returns a new object."""
    data = to_dict(obj)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise KeyError(f"unknown config key {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"unknown config key {key!r}")
        node[parts[-1]] = yaml.safe_load(raw)
    return from_dict(type(obj), data)


__all__ = ["ModelConfig", "TestConfig", "to_dict", "from_dict", "save_yaml", "load_yaml", "apply_overrides", "field"]
