"""`create` and `load`: the two ways to get a model; `evaluate`: score one on a dataset."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import presets, zoo
from .checkpoint import CheckpointError, check_compatible, extract_state_dict, safe_load
from .config import ModelConfig, TestConfig, from_dict, to_dict
from .families import family_of_state_dict
from .models.detector import RTMDet


def build_model(cfg: ModelConfig, class_names=None, test_cfg: TestConfig | None = None) -> RTMDet:
    if cfg.family == "segment":
        from .models.detector_ins import RTMDetIns  # the name RTMDet-Ins users know
        return RTMDetIns(cfg, test_cfg, class_names)
    return RTMDet(cfg, test_cfg, class_names)


def create(name: str, num_classes: int | None = None, class_names=None) -> RTMDet:
    """A randomly initialised model of a released preset (`rtmdet-tiny` ... `rtmdet-ins-x`,
    `rtmdet-r-tiny` ...); `num_classes` defaults to the preset's (80 COCO, 15 DOTA)."""
    return build_model(presets.model_config(name, num_classes), class_names)


def infer_config(state_dict: dict[str, torch.Tensor], meta: Any = None) -> ModelConfig:
    """The architecture a state_dict was made for: from our own meta when present, else from
    tensor shapes (stem width picks the size, the classifier's rows the class count)."""
    if isinstance(meta, dict) and isinstance(meta.get("rtmdet"), dict) and "model" in meta["rtmdet"]:
        return ModelConfig.from_saved(meta["rtmdet"]["model"])
    try:
        stem = state_dict["backbone.stem.2.conv.weight"].shape[0]
        num_classes = state_dict["bbox_head.rtm_cls.0.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not an RTMDet checkpoint: no {e.args[0]!r} entry") from None
    family = family_of_state_dict(state_dict)
    for rec in presets.RECORDS.values():
        if family is not None and rec.family == family.name \
                and int(64 * presets.ARCH[rec.size]["widen_factor"]) == stem:
            return rec.model_config(num_classes)
    raise CheckpointError(f"stem width {stem} matches no RTMDet size")


def _class_names(meta: Any, num_classes: int):
    if isinstance(meta, dict):
        ours = meta.get("rtmdet", {}) if isinstance(meta.get("rtmdet"), dict) else {}
        names = ours.get("class_names") or (meta.get("dataset_meta") or {}).get("classes")
        if names and len(names) == num_classes:
            return list(names)
    return None


def resolve_weights(name_or_path: str | os.PathLike, progress: bool = True) -> Path:
    """A checkpoint file: an existing path, or a zoo name downloaded once into the cache."""
    src = str(name_or_path)
    if not Path(src).exists() and presets.is_model_name(src):
        return zoo.download(presets.get_record(src).url, progress=progress)
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"{src}: no such checkpoint file and not a zoo model name "
                                f"(known: {', '.join(presets.RECORDS)})")
    return path


def load(name_or_path: str | os.PathLike, model: torch.nn.Module | str | None = None,
         device: str | torch.device = "cpu", progress: bool = True) -> RTMDet:
    """A model with weights, in eval mode: a zoo name (downloaded once) or a checkpoint path.

    `model`: the module to load into, or a preset name (`"rtmdet-s"`) to build it from; by
    default the architecture is read from the checkpoint. Only tensors are read
    (`weights_only`); a checkpoint whose keys or shapes do not fit raises CheckpointError."""
    path = resolve_weights(name_or_path, progress)
    ckpt = safe_load(path)
    state_dict = extract_state_dict(ckpt)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if isinstance(model, str):
        num_classes = state_dict.get("bbox_head.rtm_cls.0.weight", torch.empty(80)).shape[0]
        cfg = presets.model_config(model, num_classes)
        model = build_model(cfg, _class_names(meta, cfg.num_classes))
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


def evaluate(model, data, split: str = "val", batch_size: int = 8, device: str | None = None,
             strict: bool = False, progress: bool = True, **knobs):
    """Score `model` on a dataset, as `rtmdet val` does; returns an `Evaluation`
    (`.metrics["bbox"]["AP"]`, `.summary`, `.table()`, `.save_json(dir)`, `.save_plots(dir)`).

    `model`: an `RTMDet`, a `Detector`, or what `rtmdet val --weights` takes (a zoo name, a
    `.pth`, an exported `.onnx` / `.xml` / `.engine`), opened on `device` (default: cuda when
    available). `data`: a dataset path in any form `rtmdet val --data` reads (its `split`), or a
    loaded `DetectionDataset`. `knobs`: `predict`'s (score_thr, nms_iou, max_per_img, imgsz,
    tile, ...); unset, the model's test settings (the reference's, what mAP is measured with)."""
    from .data.datasets import load_dataset
    from .data.records import DetectionDataset
    from .eval.validate import Evaluation, evaluate_model

    if isinstance(model, (str, os.PathLike)):
        model = open_model(model, device)
    if isinstance(data, DetectionDataset):
        dataset = data
    else:
        dataset = load_dataset(data, split=split, strict=strict, kind=model.family.dataset_kind)
    if len(dataset) == 0:
        raise ValueError(f"{data}: no images to evaluate (split {split!r})")
    metrics, records = evaluate_model(model, dataset, batch_size, progress, **knobs)
    return Evaluation(metrics, records, dataset, model.family)


def open_model(src: str | os.PathLike, device: str | None = None):
    """A zoo name or `.pth` -> `load`ed model; an exported graph -> a `Detector` for it."""
    from .inference.detector import GRAPH_SUFFIXES, Detector

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if Path(str(src)).suffix.lower() in GRAPH_SUFFIXES:
        return Detector(src, device=device)
    return load(src, device=device)
