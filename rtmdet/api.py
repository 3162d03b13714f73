"""`create` and `load`: the two ways to get a model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import zoo
from .checkpoint import CheckpointError, check_compatible, extract_state_dict, safe_load
from .config import ModelConfig, from_dict, model_config, SIZES, TestConfig, to_dict
from .models.detector import RTMDet


def build_model(cfg: ModelConfig, class_names=None, test_cfg: TestConfig | None = None) -> RTMDet:
    if cfg.with_mask:
        from .models.detector_ins import RTMDetIns  # noqa: PLC0415 (optional family member)
        return RTMDetIns(cfg, test_cfg, class_names)
    return RTMDet(cfg, test_cfg, class_names)


def create(name: str, num_classes: int = 80, class_names=None) -> RTMDet:
    """A randomly initialised model of a preset (`rtmdet-tiny` ... `rtmdet-x`)."""
    return build_model(model_config(name, num_classes), class_names)


def infer_config(state_dict: dict[str, torch.Tensor], meta: Any = None) -> ModelConfig:
    """The architecture a state_dict was made for: from our own meta when present, else from
    tensor shapes (stem width picks the size, the classifier's rows the class count)."""
    if isinstance(meta, dict) and isinstance(meta.get("rtmdet"), dict) and "model" in meta["rtmdet"]:
        return from_dict(ModelConfig, meta["rtmdet"]["model"])
    try:
        stem = state_dict["backbone.stem.2.conv.weight"].shape[0]
        num_classes = state_dict["bbox_head.rtm_cls.0.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not an RTMDet checkpoint: no {e.args[0]!r} entry") from None
    with_mask = any(k.startswith("bbox_head.rtm_kernel") for k in state_dict)
    for size in SIZES:
        cfg = model_config(("rtmdet-ins-" if with_mask else "rtmdet-") + size, num_classes)
        if int(64 * cfg.widen_factor) == stem:
            return cfg
    raise CheckpointError(f"stem width {stem} matches no RTMDet size")


def _class_names(meta: Any, num_classes: int):
    if isinstance(meta, dict):
        ours = meta.get("rtmdet", {}) if isinstance(meta.get("rtmdet"), dict) else {}
        names = ours.get("class_names") or (meta.get("dataset_meta") or {}).get("classes")
        if names and len(names) == num_classes:
            return list(names)
    return None


def load(name_or_path: str | os.PathLike, model: torch.nn.Module | None = None,
         device: str | torch.device = "cpu", progress: bool = True) -> RTMDet:
    """A model with weights, in eval mode: a zoo name (downloaded once) or a checkpoint path.

    Only tensors are read (`weights_only`); a checkpoint whose keys or shapes do not fit the
    model raises CheckpointError naming them."""
    src = str(name_or_path)
    if not Path(src).exists() and src.lower().replace("_", "-") in zoo.ZOO:
        path = zoo.download(zoo.resolve(src).url, progress=progress)
    else:
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"{src}: no such checkpoint file and not a zoo model name "
                                    f"(known: {', '.join(zoo.ZOO)})")
    ckpt = safe_load(path)
    state_dict = extract_state_dict(ckpt)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if model is None:
        cfg = infer_config(state_dict, meta)
        test_cfg = None
        if isinstance(meta, dict) and isinstance(meta.get("rtmdet"), dict) and meta["rtmdet"].get("test"):
            test_cfg = from_dict(TestConfig, meta["rtmdet"]["test"])
        model = build_model(cfg, _class_names(meta, cfg.num_classes), test_cfg)
    check_compatible(model, state_dict, source=str(path))
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


def checkpoint_meta(model: RTMDet) -> dict:
    """What our checkpoints carry so `load` can rebuild the model without being told."""
    return {"rtmdet": {"model": to_dict(model.cfg), "test": to_dict(model.test_cfg),
                       "class_names": list(model.class_names)}}
