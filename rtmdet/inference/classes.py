"""Detecting only some classes (`predict(classes=...)`, `rtmdet predict --classes`).

The other classes' scores are set to 0 before the post-processing, so the result is what the
reference post-processing gives for a model of only these classes: the `nms_pre` and
`max_per_img` budgets go to the classes asked for. A graph with NMS inside has already spent
them; there the other classes' detections are dropped afterwards."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..ops.upload import upload


def class_indices(classes, class_names: Sequence[str]) -> list[int]:
    """Class indices or names (one, or a list of them) -> sorted unique indices; a ValueError
    naming any that the model does not have."""
    items = [classes] if isinstance(classes, (int, str, np.integer)) else list(classes)
    if not items:
        raise ValueError("classes: give at least one class index or name")
    names, out = list(class_names), set()
    for c in items:
        if isinstance(c, str) and c in names:
            out.add(names.index(c))
            continue
        if isinstance(c, str) and c.isdigit():
            i = int(c)
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            i = int(c)
        elif isinstance(c, str):
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise ValueError(f"classes: no class named {c!r} (the model's {len(names)}: {shown})")
        else:
            raise ValueError(f"classes: {c!r} is neither a class index nor a name")
        if not 0 <= i < len(names):
            raise ValueError(f"classes: {c!r} is not a class index of this model (0..{len(names) - 1})")
        out.add(i)
    return sorted(out)


class OnlyClasses:
    """`backend` (see `inference.backend.Backend`) giving detections of `keep` (indices) only;
    everything else is the backend's own."""

    def __init__(self, backend, keep: Sequence[int]):
        self.backend, self.keep = backend, list(keep)

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def __repr__(self) -> str:
        return f"OnlyClasses({self.backend!r}, {self.keep})"

    def postprocess(self, outs: dict, metas, cfg):
        if self.backend.has_nms:
            dets = self.backend.postprocess(outs, metas, cfg)
            return [d.select(_member(d.labels, self.keep)) for d in dets]
        scores = outs["scores"]
        on = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
        on[upload(self.keep, device=scores.device)] = 1
        return self.backend.postprocess({**outs, "scores": scores * on}, metas, cfg)


def _member(labels, keep: Sequence[int]):
    labels = torch.as_tensor(labels)
    return torch.isin(labels, upload(keep, labels.dtype, labels.device))
