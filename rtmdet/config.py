"""Typed configs: one dataclass per concept, presets for every released size."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml


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
    # Instance segmentation (RTMDet-Ins); False for plain detection.
    with_mask: bool = False
    num_prototypes: int = 8
    dyconv_channels: int = 8
    num_dyconvs: int = 3

    @property
    def kind(self) -> str:
        return "ins" if self.with_mask else "det"


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


DET_TEST = TestConfig()
INS_TEST = TestConfig(score_thr=0.05, nms_pre=1000, nms_iou=0.6, max_per_img=100)

_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(deepen_factor=0.167, widen_factor=0.375, neck_in_channels=(96, 192, 384),
                 neck_out_channels=96, num_csp_blocks=1, feat_channels=96, exp_on_reg=False),
    "s": dict(deepen_factor=0.33, widen_factor=0.5, neck_in_channels=(128, 256, 512),
              neck_out_channels=128, num_csp_blocks=1, feat_channels=128, exp_on_reg=False),
    "m": dict(deepen_factor=0.67, widen_factor=0.75, neck_in_channels=(192, 384, 768),
              neck_out_channels=192, num_csp_blocks=2, feat_channels=192, exp_on_reg=True),
    "l": dict(deepen_factor=1.0, widen_factor=1.0, neck_in_channels=(256, 512, 1024),
              neck_out_channels=256, num_csp_blocks=3, feat_channels=256, exp_on_reg=True),
    "x": dict(deepen_factor=1.33, widen_factor=1.25, neck_in_channels=(320, 640, 1280),
              neck_out_channels=320, num_csp_blocks=4, feat_channels=320, exp_on_reg=True),
}

SIZES = tuple(_SIZES)


def model_config(name: str, num_classes: int = 80) -> ModelConfig:
    """Preset by name: `rtmdet-s`, `rtmdet-ins-tiny`, or a bare size `s`."""
    key = name.lower().replace("_", "-")
    with_mask = key.startswith("rtmdet-ins-")
    size = key.removeprefix("rtmdet-ins-").removeprefix("rtmdet-")
    if size not in _SIZES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(preset_names())}")
    return ModelConfig(**_SIZES[size], num_classes=num_classes, with_mask=with_mask)


def preset_names() -> list[str]:
    return [f"rtmdet-{s}" for s in SIZES] + [f"rtmdet-ins-{s}" for s in SIZES]


def default_test_config(cfg: ModelConfig) -> TestConfig:
    return dataclasses.replace(INS_TEST if cfg.with_mask else DET_TEST)


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
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(obj), f, sort_keys=False)


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


__all__ = ["ModelConfig", "TestConfig", "model_config", "preset_names", "default_test_config",
           "SIZES", "to_dict", "from_dict", "save_yaml", "load_yaml", "apply_overrides", "field"]
