"""ImageNet-pretrained CSPNeXt backbones: the starting point of the rtmdet-tiny/-s recipes.

mmdet 3.3.0's `rtmdet_{tiny,s}_8xb32-300e_coco.py` and `rtmdet-ins_{tiny,s}_...` set
`backbone.init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=<url>)` with the
URLs in `presets.BACKBONES`; m/l/x train from scratch. The files are mmpretrain image
classifiers: `backbone.*` tensors named as our backbone's state_dict, plus `neck.*`/`head.*`
(and maybe `data_preprocessor.*`) entries, which are skipped.

Their file names carry no sha256 prefix, so unlike the detector checkpoints a download cannot be
checked against a hash; what is checked is that the file reads as tensors (`weights_only`) and
that every backbone tensor is there with its shape."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import presets, zoo
from .checkpoint import extract_state_dict, safe_load

log = logging.getLogger("rtmdet.pretrained")

PREFIX = "backbone."
# a BatchNorm counter, unused when momentum is set (as everywhere here): a file may lack it
_OPTIONAL = ("num_batches_tracked",)


def backbone_names() -> dict[str, str]:
    """Short names of the released backbones -> URL (`cspnext-tiny` and the file stem
    `cspnext-tiny_imagenet_600e` both name the tiny one)."""
    out = {}
    for url in presets.BACKBONES.values():
        stem = url.rsplit("/", 1)[-1][: -len(".pth")]
        out[stem] = url
        out[stem.split("_", 1)[0]] = url
    return out


def is_url(src: str) -> bool:
    return src.startswith(("http://", "https://", "file://"))


def backbone_url(src: str) -> str | None:
    """The URL a zoo-style name stands for: a backbone name (`cspnext-s`), a model name whose
    recipe starts from one (`rtmdet-s`, `rtmdet-ins-tiny`), or None."""
    key = presets.normalize_name(src)
    names = {k.replace("_", "-"): v for k, v in backbone_names().items()}
    if key in names:
        return names[key]
    if presets.is_model_name(key):
        return presets.get_record(key).pretrained_backbone
    return None


def cached_path(url: str) -> Path:
    """Where `zoo.download` keeps `url` (a copy put there by hand is used as it is)."""
    return zoo.cache_dir() / url.rsplit("/", 1)[-1]


def offline_message(url: str, reason: str) -> str:
    """One line for a failed backbone download: the file, where a copy goes, and the opt-out."""
    return (f"could not get the pretrained backbone {url.rsplit('/', 1)[-1]} ({reason}); "
            f"download {url} to {cached_path(url)} (or pass pretrained_backbone=PATH), "
            f"or train from scratch with pretrained_backbone=false")


def resolve_backbone(src: str | os.PathLike, progress: bool = True) -> Path:
    """A local file for `src`: an existing path, a URL (downloaded once into the zoo cache, with
    resume), or a zoo-style name (`cspnext-tiny`, `rtmdet-s`). DownloadError / FileNotFoundError."""
    s = str(src)
    if Path(s).is_file():
        return Path(s)
    url = s if is_url(s) else backbone_url(s)
    if url is None:
        if presets.is_model_name(s):
            raise FileNotFoundError(f"{s} trains from scratch: the reference recipe has no "
                                    "pretrained backbone for it")
        raise FileNotFoundError(f"{s}: no such backbone checkpoint file, URL or name "
                                f"(known: {', '.join(backbone_names())})")
    if url.startswith("file://"):
        return Path(url[len("file://"):])
    return zoo.download(url, progress=progress)


@dataclass
class BackboneReport:
    """What `load_pretrained_backbone` did: where from, how many tensors it loaded, and the
    entries of the file it left out (classifier head, neck, preprocessor)."""

    source: str
    loaded: int
    skipped: list[str] = field(default_factory=list)
    absent_counters: int = 0  # BatchNorm num_batches_tracked the file lacked (left as they were)

    def __str__(self) -> str:
        line = f"pretrained backbone {self.source}: loaded {self.loaded} tensors"
        if self.skipped:
            shown = ", ".join(self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            line += f", skipped {len(self.skipped)} non-backbone ({shown})"
        if self.absent_counters:
            line += f", {self.absent_counters} BatchNorm counters absent"
        return line


def _fmt(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def backbone_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone's tensors of a checkpoint (classifier or detector, `backbone.`-prefixed or
    bare) with the prefix removed, and the names of the entries left out."""
    if any(k.startswith(PREFIX) for k in state_dict):
        sd = {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
        return sd, [k for k in state_dict if not k.startswith(PREFIX)]
    return dict(state_dict), []


def load_pretrained_backbone(model: torch.nn.Module, src: str | os.PathLike,
                             progress: bool = True) -> BackboneReport:
    """Load ImageNet-pretrained weights into `model.backbone`, strictly.

    `src`: a local path, a URL (downloaded once into `RTMDET_HOME`, resumable) or a zoo-style
    name (`cspnext-tiny`, `cspnext-s`, or a model name such as `rtmdet-tiny` for its recipe's
    backbone). The file is read with `weights_only`; its `backbone.*` tensors (or all of them
    when no key has that prefix) must cover every tensor of `model.backbone` with the same
    shape, else ValueError naming the first missing / misshapen keys. Other entries (`head.*`,
    `neck.*`...) are skipped and counted in the returned report, which is also logged."""
    path = resolve_backbone(src, progress)
    sd, skipped = backbone_state_dict(extract_state_dict(safe_load(path)))
    backbone = model.backbone
    own = backbone.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(_OPTIONAL)]
    shapes = [f"{PREFIX}{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} of another shape (file vs model): {_fmt(shapes)}")
        if missing:
            parts.append(f"{len(missing)} missing: {_fmt([PREFIX + k for k in missing])}")
        raise ValueError(f"{path} does not fit the {type(backbone).__name__} backbone of "
                         f"{type(model).__name__}: " + "; ".join(parts))
    extra = [k for k in sd if k not in own]  # bare-key files: whatever is not ours
    skipped = skipped + extra
    absent = [k for k in own if k not in sd]
    backbone.load_state_dict({k: sd[k] for k in own if k in sd}, strict=False)
    report = BackboneReport(str(src), len(own) - len(absent), skipped, len(absent))
    log.info("%s", report)
    return report
