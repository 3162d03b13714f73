"""The reference post-processing in fixed shapes: no host sync, no data-dependent shape, so a GPU
runs it as one short stream of kernels (and a CUDA graph can capture it). It proves, image by
image, that its answer is the exact one; the caller retries or redoes the images it cannot
prove (`ops.postprocess`: a deeper pass, then the block-wise search of `ops.nms`).

Why it is exact where it says so (the semantics are those of `ops.nms`):
* The candidates are visited by descending score, equal scores by ascending flat index
  (prior * C + class). One int64 key per (prior, class) - the score's bits made monotone, then
  the index reversed - turns a top-k into that order exactly, ties included.
* The first `depth` entries of that order, with the too-small boxes dropped, are a prefix of the
  reference's visiting order: an entry among them has fewer than `depth <= nms_pre` entries
  before it in the whole image, so fewer in its level, so the level's `nms_pre` cut keeps it.
* NMS mode: the reference offsets boxes by class when it has fewer than SPLIT_THR candidates
  (after the `nms_pre` cut and the size filter), otherwise runs one NMS per class. The mode is
  known for sure when no level is cut (the count is exact) or when even the smallest possible
  count reaches SPLIT_THR; otherwise the image is not proven.
* Pairs: a box can only suppress a box of its class (split mode, and offset mode when the
  offsets keep the classes apart, as `ops.nms.Candidates.prepare` argues; otherwise every pair
  is listed). The pairs are listed in a fixed-length list per image, ordered by the later box's
  visiting position; the boxes whose pairs all fit form the prefix examined.
* Greedy NMS on a prefix: keep[i] = not any(keep[j] and IoU(j, i) > thr, j < i). Its solution is
  unique (j < i), so a vector that satisfies it IS the greedy result. A few fixed-point
  iterations from "all kept" usually reach it; then one more application checks it on the
  prefix up to the `max_per_img`-th kept box - the check is the proof.
* Enough: the prefix holds `max_per_img` kept boxes, or every candidate of the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import nms as _nms
from .nms import count_true, iou_over, nms_area, threshold_below

ITERATIONS = 6  # fixed-point steps before the check (the fixtures' prefixes need 1, dense
# clusters of one class up to 6: tests/test_fixed_nms.py detector_like)
# Suppression pairs listed per image: 2^23 for the batch, 2^18-2^20 per image (the fixtures'
# 300 kept need < 40000; a cluster of 300 boxes of one class 45000).
BATCH_PAIRS, MIN_PAIRS, MAX_PAIRS = 1 << 23, 1 << 18, 1 << 20




def pair_budget(images: int, batch: int = BATCH_PAIRS, most: int = MAX_PAIRS) -> int:
    """Pairs listed per image when `images` share `batch` (bounds the memory of a batch)."""
    return max(MIN_PAIRS, min(most, batch // max(images, 1)))


# why an image is not proven (0: proven)
PROVEN, MODE_UNKNOWN, TOO_SHALLOW, NOT_CONVERGED = 0, 1, 2, 3


@dataclass
class FixedSelection:
    """Per image the first `count` rows are its kept detections (score order); `status` is
    PROVEN or why not (those rows are then meaningless). `boxes` are in original pixels,
    `boxes_input` in network-input pixels, `prior_inds` the prior of each row."""

    boxes: torch.Tensor  # (B, K, 4)
    scores: torch.Tensor  # (B, K)
    labels: torch.Tensor  # (B, K)
    prior_inds: torch.Tensor  # (B, K)
    boxes_input: torch.Tensor  # (B, K, 4)
    count: torch.Tensor  # (B,)
    status: torch.Tensor  # (B,)
    candidates: torch.Tensor  # (B,) entries above score_thr (before the cut and size filter)


def search_depth(num_entries: int, max_keep: int, nms_pre: int, depth: int | None = None) -> int:
    """How many entries of the visiting order are examined: `depth` or 8x what is kept (at
    least 4096), never more than there are nor than the `nms_pre` cut is sure to keep."""
    k = min(num_entries, depth or max(4096, 8 * max_keep))
    return min(k, nms_pre) if nms_pre > 0 else k


def order_keys(scores: torch.Tensor, valid: torch.Tensor, positive: bool) -> torch.Tensor:
    """(B, M) float32 -> (B, M) int64, larger = visited first: score descending, then flat index
    ascending; -1 where not valid. `positive`: every valid score is > 0 (its bits are then
    already in float order)."""
    m = scores.shape[1]
    bits = (scores if positive else scores + 0.0).contiguous().view(torch.int32).long()
    if not positive:  # (+ 0.0: -0.0 becomes +0.0, they are equal) negative floats' bits reversed
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + (1 << 31)
    reverse = torch.arange(m - 1, -1, -1, device=scores.device)
    return torch.where(valid, torch.add(reverse, bits, alpha=m), -1)


def _level_sums(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """(B, N, ...) -> (B, L, ...): sums over each level's priors."""
    return torch.stack([v.sum(1) for v in x.split(list(sizes), 1)], 1)


def fixed_select(boxes_in: torch.Tensor, scores: torch.Tensor, sizes: Sequence[int],
                 factors: torch.Tensor, score_thr: float, nms_pre: int, nms_iou: float,
                 max_per_img: int, min_bbox_size: float, depth: int | None = None,
                 iterations: int = ITERATIONS, pairs: int | None = None) -> FixedSelection:
    """boxes_in (B,N,4) decoded input-pixel boxes, scores (B,N,C) sigmoid, levels of `sizes`
    priors, factors (B,4) input -> original pixels ([1/sw, 1/sh, 1/sw, 1/sh]) -> the kept
    detections of every image it can prove (see the module docstring), `max_per_img` >= 1.
    `depth`: how many entries of the visiting order to examine (default `search_depth`);
    `pairs`: the length of each image's pair list (default `pair_budget`)."""
    bsz, num_priors, num_classes = scores.shape
    device = scores.device
    m = num_priors * num_classes
    depth = search_depth(m, max_per_img, nms_pre, depth)
    thr = threshold_below(float(nms_iou), boxes_in.dtype)

    boxes = boxes_in * factors[:, None, :]
    flat = scores.reshape(bsz, m)
    valid = flat > score_thr
    per_prior = valid.view(bsz, num_priors, num_classes).sum(2)  # (B, N)
    if min_bbox_size >= 0:
        ok = ((boxes[..., 2:] - boxes[..., :2]) > min_bbox_size).all(2)  # (B, N)
        n, bad = _level_sums(torch.stack([per_prior, per_prior.masked_fill(ok, 0)], 2),
                             sizes).unbind(2)  # (B, L) each
        used = (per_prior > 0) & ok
    else:
        ok = None
        n, bad = _level_sums(per_prior, sizes), 0
        used = per_prior > 0

    # the NMS mode, where it is certain
    if nms_pre > 0:
        capped = n.clamp(max=nms_pre)
        uncut = (n <= nms_pre).all(1)
    else:
        capped, uncut = n, None
    split = (capped - bad).sum(1) >= _nms.SPLIT_THR  # the fewest candidates there can be
    offset = ~split if uncut is None else uncut & ~split  # exact count, below SPLIT_THR

    # the first `depth` entries of the visiting order
    key, idx = order_keys(flat, valid, score_thr >= 0).topk(depth, dim=1)
    prior, label = idx // num_classes, idx % num_classes
    cand = key >= 0
    if ok is not None:
        cand &= ok.gather(1, prior)
    bb = boxes.gather(1, prior[..., None].expand(-1, -1, 4))
    # class offsets (offset-mode images): per image max coordinate of its candidates, + 1
    scale = boxes.masked_fill(~used[..., None], float("-inf")).amax(dim=(1, 2)) + 1
    frame = torch.where(offset[:, None, None], torch.addcmul(bb, label[..., None], scale[:, None, None]), bb)
    area = nms_area(frame)

    # suppression pairs j -> i (j visited first): only pairs of the same group - the same class
    # in split mode, and in offset mode where the offsets keep the classes apart (as in
    # `ops.nms.Candidates.prepare`); else every pair, as torchvision sees only shifted boxes
    low = boxes.masked_fill(~used[..., None], float("inf")).amin(dim=(1, 2))
    apart = (low >= 0) & (scale * num_classes < 1.0 / torch.finfo(boxes.dtype).eps)
    one_group = offset & ~apart if thr >= 0 else offset
    entries = bsz * depth
    position = torch.arange(entries, device=device)
    group = torch.where(one_group[:, None], 0, label) + \
        torch.arange(0, bsz * num_classes, num_classes, device=device)[:, None]
    # non-candidates alone in a group of their own: no pairs
    group = torch.where(cand, group, position.view(bsz, depth) + bsz * num_classes).view(-1)
    sorted_group, order = group.sort(stable=True)  # stable: visiting order within a group
    first = torch.searchsorted(sorted_group, sorted_group)  # where each one's group starts
    # per entry, in visiting order: its sorted position and how many earlier group members
    at = torch.empty_like(order).scatter_(0, order, position)
    before = (at - first[at]).view(bsz, depth)
    # the pair list of each image in visiting order of the later entry, `pairs` long: the
    # entries whose pairs all fit make the prefix that is examined
    ends = before.cumsum(1)
    budget = max(1, min(pairs or pair_budget(bsz), depth * (depth - 1) // 2))
    slot = torch.arange(budget, device=device).repeat(bsz, 1)
    k = torch.searchsorted(ends, slot, right=True).clamp_(max=depth - 1)  # (B, P) later entry
    e = (k + torch.arange(0, entries, depth, device=device)[:, None]).view(-1)
    nth = slot - (ends.gather(1, k) - before.gather(1, k))  # which earlier member of the group
    j = order[(first[at[e]] + nth.view(-1)).clamp_(0, entries - 1)]
    boxes_flat, area_flat = frame.view(-1, 4), area.view(-1)
    hit = iou_over(boxes_flat[e], area_flat[e], boxes_flat[j], area_flat[j], thr) & \
        (slot < ends[:, -1:]).view(-1)
    src = torch.where(hit, j, entries)  # entry `entries`: a spare that is never kept
    dst = torch.where(hit, e, entries)
    reach = count_true(ends <= budget, 1)  # (B,) entries whose pairs are all listed
    cand &= torch.arange(depth, device=device) < reach[:, None]

    # keep as 0/1 floats with a spare last entry (never kept); `hit_by` is written only where
    # pairs end (max over this step's pairs, include_self=False), elsewhere it stays 0
    candidate = torch.cat([cand.view(-1), cand.new_zeros(1)]).to(boxes.dtype)
    hit_by = torch.zeros_like(candidate)

    def step(keep):  # keep[i] = candidate[i] and no kept j < i suppresses i
        hit_by.scatter_reduce_(0, dst, keep[src], "amax", include_self=False)
        return torch.addcmul(candidate, candidate, hit_by, value=-1)  # candidate and not hit

    keep = candidate
    for _ in range(iterations):
        keep = step(keep)
    again = step(keep)[:-1].view(bsz, depth) > 0
    keep = keep[:-1].view(bsz, depth) > 0
    kept_before = keep.cumsum(1) - keep.long()
    prefix = kept_before < max_per_img  # up to and including the max_per_img-th kept entry
    converged = ((again == keep) | ~prefix).all(1)
    total = keep.sum(1)
    candidates = n.sum(1)
    enough = (total >= max_per_img) | (candidates <= reach)
    status = torch.where(split | offset,
                         torch.where(enough, torch.where(converged, PROVEN, NOT_CONVERGED), TOO_SHALLOW),
                         MODE_UNKNOWN)

    # the kept rows, in visiting order, into (B, max_per_img) (one spare slot for the rest)
    width = min(max_per_img, depth)
    slot = torch.where(keep & prefix, kept_before, width)
    pick = torch.zeros((bsz, width + 1), dtype=torch.long, device=device)
    pick.scatter_(1, slot, torch.arange(depth, device=device).expand(bsz, -1))
    pick = pick[:, :width]
    entry = idx.gather(1, pick)
    p = entry // num_classes
    return FixedSelection(boxes=bb.gather(1, pick[..., None].expand(-1, -1, 4)),
                          scores=flat.gather(1, entry), labels=entry % num_classes, prior_inds=p,
                          boxes_input=boxes_in.gather(1, p[..., None].expand(-1, -1, 4)),
                          count=total.clamp(max=width), status=status, candidates=candidates)
