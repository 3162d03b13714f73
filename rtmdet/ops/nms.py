"""Class-aware NMS with the reference's semantics on top of torchvision's kernel."""
from __future__ import annotations

import torch
import torchvision

# Below this many boxes the reference offsets boxes per class and runs one NMS; above, a loop.
SPLIT_THR = 10000


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Indices kept by per-class NMS, ordered by descending score."""
    if boxes.numel() == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    if boxes.shape[0] < SPLIT_THR:
        offsets = labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)
    # one NMS per class: group the boxes by label with a single sort instead of a scan per class
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels[order]).tolist()
    kept, start = [], 0
    for n in counts:
        if n:
            idx = order[start:start + n]
            kept.append(idx[torchvision.ops.nms(boxes[idx], scores[idx], iou_threshold)])
            start += n
    keep = torch.cat(kept)
    return keep[scores[keep].sort(descending=True)[1]]
