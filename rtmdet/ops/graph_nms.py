"""Class-aware NMS written with fixed-size tensors only, so it traces into an ONNX graph (one
`NonMaxSuppression` node) with dynamic batch and image size; the eager forward follows the ONNX
semantics with torchvision's kernel, so the traced module is testable in PyTorch."""
from __future__ import annotations

import torch
import torchvision


class _MultiClassNMS(torch.autograd.Function):
    """ONNX NonMaxSuppression: boxes (B,N,4), scores (B,C,N) -> selected (M,3) [batch, class, box].

    Eager forward: per batch and class, score > score_thr, greedy IoU > iou suppression, at
    most `max_out` per class."""

    @staticmethod
    def forward(ctx, boxes, scores, max_out: int, iou: float, score_thr: float):
        rows = []
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c]
                idx = (s > score_thr).nonzero().view(-1)
                if idx.numel() == 0:
                    continue
                keep = idx[torchvision.ops.nms(boxes[b, idx], s[idx], iou)][:max_out]
                rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
        if not rows:
            return torch.zeros((0, 3), dtype=torch.long, device=boxes.device)
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou, score_thr):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.long)),
                    g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([score_thr], dtype=torch.float32)),
                    center_point_box_i=0)


def graph_multiclass_nms(boxes: torch.Tensor, score_levels: list[torch.Tensor], *,
                         score_thr: float, nms_iou: float, max_det: int, nms_pre: int,
                         min_bbox_size: float):
    """Decoded boxes (B,N,4) and per-level sigmoid scores [(B,n_l,C)] -> num_dets (B,1) int32,
    boxes (B,K,4), scores (B,K), labels (B,K) int32 (-1 in padded rows), box_idx (B,K) the
    prior of each row.

    As the reference: per level keep the top `nms_pre` (box, class) pairs above score_thr
    (filter-then-topk; `nms_pre` dummies of score -1 keep k constant for dynamic shapes), drop
    boxes not wider/taller than `min_bbox_size`, class-aware NMS, best `max_det` by score."""
    masked = []
    for sc in score_levels:
        b = sc.shape[0]
        flat = sc.flatten(1)  # (B, HW*C)
        if nms_pre > 0:
            pad = torch.full((b, nms_pre), -1.0, dtype=flat.dtype, device=flat.device)
            _, idx = torch.cat([flat, pad], 1).topk(nms_pre, dim=1)
            keep = torch.zeros_like(torch.cat([flat, pad], 1)).scatter(1, idx, 1.0)
            keep = keep[:, : torch._shape_as_tensor(flat)[1]] > 0
            flat = torch.where(keep, flat, torch.full_like(flat, -1.0))
        masked.append(flat.reshape(sc.shape))
    scores = torch.cat(masked, 1)  # (B,N,C), -1 = dropped
    wh = boxes[..., 2:] - boxes[..., :2]
    ok = (wh > min_bbox_size).all(-1, keepdim=True)
    scores = torch.where(ok, scores, torch.full_like(scores, -1.0))
    scores_t = scores.transpose(1, 2).contiguous()  # (B,C,N)
    sel = _MultiClassNMS.apply(boxes, scores_t, max_det, nms_iou, score_thr)
    bi, ci, ni = sel[:, 0], sel[:, 1], sel[:, 2]
    shape = torch._shape_as_tensor(scores_t)
    sel_scores = scores_t.flatten().index_select(0, (bi * shape[1] + ci) * shape[2] + ni)
    bsz = boxes.shape[0]
    batch_ids = torch.arange(bsz, device=boxes.device)
    cand = torch.where(bi[None, :] == batch_ids[:, None], sel_scores[None, :],
                       torch.full_like(sel_scores[None, :], -1.0))  # (B,M)
    k = max_det
    cand = torch.cat([cand, torch.full((bsz, k), -1.0, dtype=cand.dtype, device=cand.device)], 1)
    top, idx = cand.topk(k, dim=1)  # (B,K)
    valid = top >= 0
    zeros = torch.zeros(k, dtype=ni.dtype, device=ni.device)
    box_idx = torch.cat([ni, zeros]).index_select(0, idx.flatten()).reshape(idx.shape)
    lab = torch.cat([ci, zeros]).index_select(0, idx.flatten()).reshape(idx.shape)
    out_boxes = boxes.gather(1, box_idx.unsqueeze(-1).expand(-1, -1, 4))
    out_boxes = torch.where(valid.unsqueeze(-1), out_boxes, torch.zeros_like(out_boxes))
    out_scores = torch.where(valid, top, torch.zeros_like(top))
    labels = torch.where(valid, lab, torch.full_like(lab, -1)).to(torch.int32)
    num_dets = valid.sum(1, keepdim=True).to(torch.int32)
    return num_dets, out_boxes, out_scores, labels, box_idx
