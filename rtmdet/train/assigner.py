"""Dynamic soft-label assignment (RTMDet), computed for a whole padded batch at once.

Per image and ground truth the reference (mmdet `DynamicSoftLabelAssigner`) does:

* candidates: priors whose centre lies strictly inside at least one gt box ("valid" priors);
* cost(prior, gt) over valid priors and ALL gts of the image:
  - soft classification cost: BCE(logits, onehot*IoU) * |onehot*IoU - sigmoid|^2, summed over classes
  - IoU cost: -log(IoU + 1e-7) * iou_weight
  - soft centre prior: 10 ** (|prior - gt centre| / stride - soft_center_radius)
* dynamic k per gt = max(1, int(sum of the gt's top-`topk` IoUs over valid priors));
  the gt takes its k cheapest valid priors;
* a prior taken by several gts keeps the gt of minimum cost over the whole row (all gts);
* result: gt index (0 = background, k = gt k-1), label (-1 background) and the IoU with the
  matched gt (`max_overlaps`, -1e8 for background, 0 everywhere when there is no gt or no valid
  prior).

Here the images are stacked: gts padded to the batch maximum with a `gt_valid` mask, invalid
(prior, gt) pairs carrying an infinite cost, so no Python loop over images or gts is needed.

What depends on the kind of box is a `BoxKind`: the candidate test, the gt centre and the IoU.
`AXIS_ALIGNED` (xyxy; mmdet `HorizontalBoxes`: strictly inside, box centre, `bbox_overlaps`) is
the default; `ROTATED` ((cx, cy, w, h, theta); mmrotate `RotatedBoxes`: inside the rotated box by
0.01 px in its own frame, centre (cx, cy), `rbbox_overlaps`) serves RTMDet-R.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..ops.boxes import box_iou
from ..ops.rotated import points_in_rotated_boxes, rbbox_overlaps

INF = 100000000.0
EPS = 1.0e-7


class BoxKind:
    """The box-dependent parts of the assignment, for gts padded to (B, M, dim)."""

    dim = 4

    def inside(self, centers: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """(N,2) prior centres x (B,M,dim) gts -> (B,N,M) bool: the centre is a candidate."""
        raise NotImplementedError

    def centers(self, gt_boxes: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., 2) the gt centres of the soft centre prior."""
        raise NotImplementedError

    def ious(self, pred: torch.Tensor, image: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """(P,dim) decoded predictions of the candidate priors, (P,) their image index and
        (B,M,dim) gts -> (P,M) IoU of each prediction with every gt of its image."""
        raise NotImplementedError


class AxisAlignedBoxes(BoxKind):
    """xyxy boxes (mmdet `HorizontalBoxes`)."""

    dim = 4

    def inside(self, centers, gt_boxes):
        cx, cy = centers[None, :, None, 0], centers[None, :, None, 1]  # (1,N,1)
        x1, y1, x2, y2 = (gt_boxes[:, None, :, i] for i in range(4))  # (B,1,M)
        return (cx > x1) & (cy > y1) & (x2 > cx) & (y2 > cy)

    def centers(self, gt_boxes):
        return torch.stack([(gt_boxes[..., 0] + gt_boxes[..., 2]) / 2.0,
                            (gt_boxes[..., 1] + gt_boxes[..., 3]) / 2.0], -1)

    def ious(self, pred, image, gt_boxes):
        return box_iou(pred[:, None, :], gt_boxes[image]).squeeze(1)


class RotatedBoxes(BoxKind):
    """(cx, cy, w, h, theta) boxes as given (not regularised; mmrotate `RotatedBoxes`)."""

    dim = 5

    def inside(self, centers, gt_boxes):
        B, M, _ = gt_boxes.shape
        inside = points_in_rotated_boxes(centers, gt_boxes.reshape(B * M, 5))  # (N, B*M)
        return inside.reshape(-1, B, M).permute(1, 0, 2)

    def centers(self, gt_boxes):
        return gt_boxes[..., :2]

    def ious(self, pred, image, gt_boxes):
        out = pred.new_zeros(pred.shape[0], gt_boxes.shape[1])
        for b in image.unique().tolist():  # N x M per image: the exact IoU only where hulls meet
            rows = (image == b).nonzero().squeeze(1)
            out[rows] = rbbox_overlaps(pred[rows], gt_boxes[b])
        return out


AXIS_ALIGNED = AxisAlignedBoxes()
ROTATED = RotatedBoxes()


@dataclass
class AssignResult:
    """Per prior, for a batch: all (B, N)."""

    gt_inds: torch.Tensor  # int64, 0 = background, k = matched to gt k-1
    labels: torch.Tensor  # int64, -1 for background
    max_overlaps: torch.Tensor  # float, IoU with the matched gt

    @property
    def pos_mask(self) -> torch.Tensor:
        return self.gt_inds > 0


class DynamicSoftLabelAssigner:
    def __init__(self, topk: int = 13, iou_weight: float = 3.0, soft_center_radius: float = 3.0,
                 boxes: BoxKind = AXIS_ALIGNED):
        self.boxes = boxes
        self.topk = topk
        self.iou_weight = iou_weight
        self.soft_center_radius = soft_center_radius

    @torch.no_grad()
    def assign(self, pred_scores: torch.Tensor, pred_boxes: torch.Tensor, priors: torch.Tensor,
               gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
               gt_valid: torch.Tensor | None = None) -> AssignResult:
        """pred_scores (B,N,C) logits; pred_boxes (B,N,dim) decoded boxes; priors (N,4) rows
        (x, y, stride_w, stride_h); gt_boxes (B,M,dim); gt_labels (B,M); gt_valid (B,M) bool
        (padding rows False); dim and meaning as `self.boxes` says (xyxy by default). Returns
        per-prior results of shape (B, N)."""
        B, N, C = pred_scores.shape
        M = gt_boxes.shape[1]
        device = pred_scores.device
        if gt_valid is None:
            gt_valid = torch.ones(gt_boxes.shape[:2], dtype=torch.bool, device=device)
        gt_valid = gt_valid.bool()
        gt_inds = torch.zeros(B, N, dtype=torch.long, device=device)
        labels = torch.full((B, N), -1, dtype=torch.long, device=device)
        max_overlaps = torch.zeros(B, N, dtype=torch.float32, device=device)
        if M == 0 or N == 0:
            return AssignResult(gt_inds, labels, max_overlaps)

        pred_scores = pred_scores.float()
        pred_boxes = pred_boxes.float()
        gt_boxes = gt_boxes.float()
        centers = priors[:, :2].float()
        # candidates: centre inside a (real) gt
        is_in_gts = self.boxes.inside(centers, gt_boxes) & gt_valid[:, None, :]
        valid = is_in_gts.any(-1)  # (B,N)
        pair_ok = valid[:, :, None] & gt_valid[:, None, :]  # (B,N,M)

        # every cost term only for candidate priors (P of the B*N), scattered back afterwards
        vb, vn = valid.nonzero(as_tuple=True)
        gt_ctr = self.boxes.centers(gt_boxes)[vb]  # (P,M,2)
        dx, dy = centers[vn, 0, None] - gt_ctr[..., 0], centers[vn, 1, None] - gt_ctr[..., 1]  # (P,M)
        distance = (dx * dx + dy * dy).sqrt() / priors[vn, 2, None].float()
        soft_center_prior = torch.pow(10, distance - self.soft_center_radius)

        ious_v = self.boxes.ious(pred_boxes[vb, vn], vb, gt_boxes)  # (P,M)
        ious_v = torch.where(gt_valid[vb], ious_v, torch.zeros_like(ious_v))
        iou_cost = -torch.log(ious_v + EPS) * self.iou_weight

        # classification cost: every class has target 0 except the gt's class, target IoU.
        # sum_c BCE(x_c, 0) * sigmoid(x_c)^2  - (gt class term with target 0) + (gt class term)
        logits = pred_scores[vb, vn]  # (P,C)
        neg_terms = F.binary_cross_entropy_with_logits(
            logits, torch.zeros_like(logits), reduction="none") * logits.sigmoid().pow(2.0)
        labels_safe = gt_labels.long().clamp(0, C - 1) * gt_valid.long()  # (B,M)
        idx = labels_safe[vb]  # (P,M)
        x_gt = torch.gather(logits, 1, idx)  # logit of each gt's class
        neg_gt = torch.gather(neg_terms, 1, idx)
        pos_gt = F.binary_cross_entropy_with_logits(x_gt, ious_v, reduction="none") \
            * (ious_v - x_gt.sigmoid()).abs().pow(2.0)
        soft_cls_cost = neg_terms.sum(-1, keepdim=True) - neg_gt + pos_gt

        # pairs the reference never sees (priors outside every gt, padded gts) rank last; +inf,
        # not 1e8, because real costs can exceed 1e8 (the centre prior is 10**(d/stride - 3))
        cost_v = soft_cls_cost + iou_cost + soft_center_prior
        cost_v = torch.where(gt_valid[vb], cost_v, torch.full_like(cost_v, float("inf")))
        cost = torch.full((B, N, M), float("inf"), device=device)
        cost[vb, vn] = cost_v
        ious = torch.zeros((B, N, M), device=device)
        ious[vb, vn] = ious_v

        # dynamic k per gt from the top-k IoUs over valid priors (invalid ones hold IoU 0)
        k = min(self.topk, N)
        topk_ious = ious.topk(k, dim=1).values  # (B,k,M)
        num_valid = valid.sum(1)  # (B,)
        dynamic_ks = topk_ious.sum(1).int().clamp(min=1)  # (B,M)
        dynamic_ks = torch.minimum(dynamic_ks, num_valid[:, None].int().clamp(min=1))
        kmax = int(dynamic_ks.max()) if dynamic_ks.numel() else 1
        kmax = min(kmax, N)
        _, pos_idx = cost.topk(kmax, dim=1, largest=False)  # (B,kmax,M)
        take = torch.arange(kmax, device=device)[None, :, None] < dynamic_ks[:, None, :]
        matching = torch.zeros(B, N, M, dtype=torch.bool, device=device)
        matching.scatter_(1, pos_idx, take)
        matching &= pair_ok

        # a prior matched to several gts keeps the gt of minimum cost over the whole row (the
        # row minima taken for every row, used where needed: no read of whether any row needs it)
        multi = matching.sum(-1) > 1  # (B,N)
        one = F.one_hot(cost.argmin(-1), M).bool()
        matching = torch.where(multi[..., None], one, matching)
        fg = matching.any(-1) & valid
        matched_gt = matching.to(torch.uint8).argmax(-1)  # (B,N)
        matched_iou = (matching.to(ious.dtype) * ious).sum(-1)

        has = (gt_valid.any(1) & valid.any(1))[:, None]  # images with gts and candidates
        gt_inds = torch.where(fg, matched_gt + 1, gt_inds)
        labels = torch.where(fg, torch.gather(gt_labels.long(), 1, matched_gt), labels)
        max_overlaps = torch.where(fg, matched_iou,
                                   torch.where(has, torch.full_like(matched_iou, -INF), max_overlaps))
        return AssignResult(gt_inds, labels, max_overlaps)

    __call__ = assign
