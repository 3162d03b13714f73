"""Task families: one object per task (detection, instance segmentation, rotated detection)
owning head, decoding, post-processing, loss, training targets, metrics and export outputs."""
from __future__ import annotations

from typing import Mapping

import torch

from .base import TaskFamily
from .detect import DETECT, DetectFamily
from .rotated import ROTATED, RotatedFamily
from .segment import SEGMENT, SegmentFamily

# most specific first: `family_of_state_dict` takes the first that owns a checkpoint's keys
FAMILIES: dict[str, TaskFamily] = {f.name: f for f in (SEGMENT, ROTATED, DETECT)}


def get_family(name: str | TaskFamily) -> TaskFamily:
    if isinstance(name, TaskFamily):
        return name
    if name not in FAMILIES:
        raise KeyError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_state_dict(state_dict: Mapping[str, torch.Tensor]) -> TaskFamily | None:
    """The family whose head a checkpoint holds, or None for a file that is no RTMDet."""
    return next((f for f in FAMILIES.values() if f.owns(state_dict)), None)


__all__ = ["TaskFamily", "DetectFamily", "SegmentFamily", "RotatedFamily", "DETECT", "SEGMENT",
           "ROTATED", "FAMILIES", "get_family", "family_of_state_dict"]
