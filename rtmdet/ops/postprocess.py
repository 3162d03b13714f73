"""The reference post-processing: per-level score filter and top-k, decode, rescale, NMS.

Entry points: `postprocess_batch` for a batch of raw head maps, `postprocess_single` for one
image's maps (PyTorch models) and `postprocess_decoded` for already decoded boxes and sigmoid
scores (exported graphs). All run the same batched steps: the per-level filter and `nms_pre`
cut as masks over the (prior, class) grid, then the early-stopping class-aware NMS
(`ops.nms.batched_nms_topk`), which visits candidates in global score order and stops after
`max_per_img` kept. `select_topk` + `finish` are the step-by-step original, kept for reference.

Ties: wherever the reference sorts (the per-level top-k, the NMS visiting order, the final
order) equal scores are taken by ascending flat index (level, prior, class): the reference with
its sorts made stable. The reference (mmdet `filter_scores_and_topk`, mmcv `nms` and its split
loop) and the original code here (`select_topk`, `batched_nms` above SPLIT_THR) sort unstably,
which leaves that order to the sort implementation (std::sort / x86-simd-sort / CUDA); with no
exactly equal scores involved the results are identical."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import TestConfig
from .boxes import distance2bbox
from .nms import SPLIT_THR, Candidates, batched_nms, count_true, greedy_blocks, nonzero_known
from .upload import rows_index, upload


@dataclass
class RawDetections:
    """One image's kept detections; `prior_inds` index the concatenated priors (for mask heads),
    `boxes_input` are the same boxes in network-input pixels."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    prior_inds: torch.Tensor
    boxes_input: torch.Tensor


def select_topk(scores: torch.Tensor, score_thr: float, nms_pre: int):
    """One level's (N,C) scores -> the (prior, class) pairs above `score_thr`, best `nms_pre`
    first: (scores, prior indices, labels). The original step (unstable sort, as the reference);
    the pipeline uses `select_mask`."""
    valid = scores > score_thr
    vals = scores[valid]
    idxs = valid.nonzero()
    k = min(nms_pre, idxs.shape[0]) if nms_pre > 0 else idxs.shape[0]
    vals, order = vals.sort(descending=True)
    keep, labels = idxs[order[:k]].unbind(dim=1)
    return vals[:k], keep, labels


def finish(boxes_in: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
           inds: torch.Tensor, scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """Rescale to original pixels, drop boxes not wider/taller than `min_bbox_size`, class-aware
    NMS, keep `max_per_img` by score."""
    sw, sh = scale_factor
    boxes = boxes_in * boxes_in.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh])
    if cfg.min_bbox_size >= 0:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        if not bool(ok.all()):
            boxes, boxes_in, scores, labels, inds = boxes[ok], boxes_in[ok], scores[ok], labels[ok], inds[ok]
    keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_per_img]
    return RawDetections(boxes[keep], scores[keep], labels[keep], inds[keep], boxes_in[keep])


def _kth_largest(s: torch.Tensor, k: int) -> torch.Tensor:
    """(R, M) -> (R, 1): each row's k-th largest value (k <= M). On the CPU a threshold from a
    strided sample, then a top-k over the (few) entries above it (a plain top-k where that
    misses); on a GPU one batched radix top-k is faster than that per-row loop and its syncs."""
    if s.is_cuda:
        return s.topk(k, dim=1, sorted=False)[0].amin(dim=1, keepdim=True)
    step = max(1, k // 128)
    est = s[:, ::step].topk(min(s.shape[1] // step, 2 * k // step + 8), dim=1)[0][:, -1]
    out = []
    for row, e in zip(s, est):
        sel = row.masked_select(row >= e)
        if sel.numel() < k or sel.numel() > 16 * k:
            sel = row
        out.append(sel.topk(k, sorted=False)[0].amin())
    return torch.stack(out)[:, None]


def select_mask(scores: torch.Tensor, score_thr: float, nms_pre: int) -> torch.Tensor:
    """(B, M) scores of one level (M = priors x classes, flattened row-major) -> (B, M) bool:
    the entries `select_topk` keeps, ties at the `nms_pre` cut taken by ascending index."""
    valid = scores > score_thr
    if nms_pre <= 0 or scores.shape[1] <= nms_pre:
        return valid
    over = count_true(valid, 1) > nms_pre
    if not bool(over.any()):  # host sync: is a cut needed at all
        return valid
    rows = over.nonzero().view(-1)
    s = scores if len(rows) == len(scores) else scores[rows]
    kth = _kth_largest(s, nms_pre)  # > score_thr
    take = s >= kth
    if bool((count_true(take, 1) > nms_pre).any()):  # ties straddle the cut: the lowest indices
        tied = s == kth
        take = (s > kth) | (tied & (tied.cumsum(1) <= nms_pre - count_true(s > kth, 1)[:, None]))
    valid[rows] = take
    return valid


def _cut(scores: torch.Tensor, sizes: Sequence[int], ok: torch.Tensor | None,
         cfg: TestConfig) -> torch.Tensor:
    """scores (b,P,C) -> (b,P,C) bool: the exact candidates (per-level filter and cut, then the
    box-size filter)."""
    bsz, _, num_classes = scores.shape
    cand = torch.cat([select_mask(s.reshape(bsz, -1), cfg.score_thr, cfg.nms_pre).view(bsz, -1, num_classes)
                      for s in scores.split(list(sizes), dim=1)], 1)
    return cand if ok is None else cand & ok[..., None]


_COMPACT = 32768  # at most this many candidates per image: NMS on a gathered list, not the grid


def _nms_grid(boxes, scores, cand, iou_threshold, max_keep, offset_mode=None, pos_limit=None, count=None,
              host=None):
    """NMS over the (prior, class) grid, entry p*C + c = prior p's box with label c; returns
    (kept grid entries per image, images to redo - see `greedy_blocks`). `host`: what
    `Candidates.host` would read, when the caller knows it."""
    bsz, _, num_classes = scores.shape
    cand = cand.view(bsz, -1)
    count = count_true(cand, 1) if count is None else count
    grid = Candidates(boxes, lambda i: i % num_classes, scores.view(bsz, -1), cand, SPLIT_THR,
                      prior_of=lambda i: i // num_classes, offset_mode=offset_mode,
                      pos_limit=pos_limit, num_labels=num_classes, count=count, host=host)
    most = max(grid.host()[0])  # the one host read of the counts, reused by greedy_blocks
    if most > _COMPACT:
        return greedy_blocks(grid, iou_threshold, max_keep)
    # few candidates: gather them (ascending grid index, the tie order) into a padded list
    rows, cols = nonzero_known(cand, sum(grid.host()[0]))
    at = torch.arange(len(rows), device=rows.device) - (count.cumsum(0) - count)[rows]
    entry = torch.zeros((bsz, most), dtype=torch.long, device=rows.device)
    entry[rows, at] = cols
    valid = torch.arange(most, device=rows.device)[None, :] < count[:, None]
    prior = entry // num_classes
    lst = Candidates(boxes.gather(1, prior[..., None].expand(-1, -1, 4)), entry % num_classes,
                      scores.view(bsz, -1).gather(1, entry), valid, SPLIT_THR,
                      offset_mode=grid.offset_mode, pos_limit=pos_limit, count=count, host=grid.host())
    keeps, overflow = greedy_blocks(lst, iou_threshold, max_keep)
    return [entry[b, k] for b, k in enumerate(keeps)], overflow


def _postprocess_grid(scores: torch.Tensor, sizes: Sequence[int], boxes_in,
                      scale_factors: Sequence[tuple[float, float]], cfg: TestConfig,
                      valid_counts=None) -> list[RawDetections]:
    """scores (B,P,C) sigmoid, boxes_in (B,P,4) decoded input-pixel boxes of all P priors (levels
    of `sizes` concatenated; or a function giving them, called only if there are candidates)
    -> per image the kept detections, as `finish` would return them. `valid_counts`: the
    (scores > score_thr) mask and its (B, levels) counts, if already computed.

    The `nms_pre` cut (a top-k over up to 512000 scores per level) is only computed where it
    can change something: with at least SPLIT_THR candidates left after it whatever it cuts,
    the NMS first runs on all candidates while visiting no more than `nms_pre` minus the
    too-small boxes of a level - every box visited then is one the cut keeps - and an image
    that needs to visit more is redone with the exact cut."""
    bsz = scores.shape[0]
    max_keep = cfg.max_per_img if cfg.max_per_img >= 0 else None
    if valid_counts is None:
        valid = scores > cfg.score_thr
        n = torch.stack([count_true(v, (1, 2)) for v in valid.split(list(sizes), 1)], 1)  # (B, levels)
    else:
        valid, n = valid_counts
    # the decisions below are taken on the host from these counts (one read, not one per step)
    n_host = n.tolist()  # host sync
    totals = [sum(row) for row in n_host]
    most = max(totals)
    if most == 0 or max_keep == 0:
        empty = torch.zeros((0,), dtype=torch.long, device=scores.device)
        box = scores.new_zeros((0, 4))
        return [RawDetections(box, scores.new_zeros((0,)), empty, empty, box) for _ in range(bsz)]
    if callable(boxes_in):
        boxes_in = boxes_in()
    boxes = boxes_in * _inverse_scales(tuple(map(tuple, scale_factors)), boxes_in.dtype, boxes_in.device)[:, None, :]
    ok = None
    if cfg.min_bbox_size >= 0:
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        ok = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        if bool(ok.all()):  # host sync: every box is large enough
            ok = None
    cand = valid if ok is None else valid & ok[..., None]
    counts = totals if ok is None else None
    k = cfg.nms_pre
    over = [0 < k < most and max(row) > k for row in n_host]  # a level with more than nms_pre
    lazy, limits = [False] * bsz, [None] * bsz
    if any(over):
        bad = [[0] * len(sizes)] * bsz if ok is None else torch.stack(
            [count_true(v & ~o[..., None], (1, 2)) for v, o in zip(valid.split(list(sizes), 1),
                                                            ok.split(list(sizes), 1))], 1).tolist()
        # split mode whatever the cut: the NMS runs on all candidates, visiting at most
        # nms_pre minus the level's too-small boxes (`greedy_blocks` reports who needs more)
        lazy = [sum(min(c, k) for c in row) - sum(b) >= SPLIT_THR for row, b in zip(n_host, bad)]
        limits = [k - max(b) if z and o else None for b, z, o in zip(bad, lazy, over)]
        exact = [i for i in range(bsz) if over[i] and not lazy[i]]
        if exact:
            rows = rows_index(exact, scores.device)
            cand = cand.clone()
            cand[rows] = _cut(scores[rows], sizes, None if ok is None else ok[rows], cfg)
            counts = None
    if counts is None:  # some boxes were dropped or cut: count what is left
        count = count_true(cand, (1, 2))
        counts = count.tolist()  # host sync
    else:
        count = n.sum(1)
    offset = [c < SPLIT_THR and not z for c, z in zip(counts, lazy)]
    host = (counts, [c if lim is None else min(c, lim) for c, lim in zip(counts, limits)], any(offset))
    offset_mode = _flags(offset, scores.device)
    keeps, overflow = _nms_grid(boxes, scores, cand, cfg.nms_iou, max_keep, offset_mode, None, count, host)
    if overflow:  # visited more than the deferred cut allows: redo these with the exact cut
        rows = upload(overflow, device=scores.device)
        exact = _cut(scores[rows], sizes, None if ok is None else ok[rows], cfg)
        redo, _ = _nms_grid(boxes[rows], scores[rows], exact, cfg.nms_iou, max_keep)
        for b, keep in zip(overflow, redo):
            keeps[b] = keep
    if cfg.max_per_img < 0:
        keeps = [keep[: cfg.max_per_img] for keep in keeps]
    return _gather_kept(keeps, boxes, scores, boxes_in)


@functools.lru_cache(maxsize=64)
def _inverse_scales(scale_factors: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(B, 4) [1/sw, 1/sh, 1/sw, 1/sh] per image on `device`, made once per set of scale factors
    (a video or a folder of one size reuses it): an upload is a wait for the device."""
    with torch.inference_mode(False):  # a plain tensor: usable inside and outside inference mode
        return torch.tensor([[1 / sw, 1 / sh, 1 / sw, 1 / sh] for sw, sh in scale_factors],
                            dtype=dtype, device=device)


def _flags(values: list[bool], device) -> torch.Tensor:
    """Per-image booleans on `device`, uploaded only when they differ."""
    if len(set(values)) == 1:
        return torch.full((len(values),), values[0], dtype=torch.bool, device=device)
    return upload(values, torch.bool, device)


def _gather_kept(keeps: list[torch.Tensor], boxes, scores, boxes_in) -> list[RawDetections]:
    """Per image the kept grid entries' detections, gathered for the whole batch at once (a
    handful of kernels instead of five per image) and split back into views per image."""
    bsz, _, num_classes = scores.shape
    sizes = [len(k) for k in keeps]
    keep = torch.cat(keeps) if bsz > 1 else keeps[0]
    img = upload(torch.repeat_interleave(torch.arange(bsz), torch.tensor(sizes), output_size=len(keep)),
                 device=keep.device) if bsz > 1 else 0
    prior = keep // num_classes
    fields = (boxes[img, prior], scores.view(bsz, -1)[img, keep], keep % num_classes, prior,
              boxes_in[img, prior])
    return [RawDetections(*f) for f in zip(*(x.split(sizes) for x in fields))]


def _per_image_scores(ref: torch.Tensor) -> bool:
    """Whether the batch's scores are prepared image by image (CPU) or at once (other devices)."""
    return ref.device.type == "cpu"


def postprocess_batch(cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                      priors: list[torch.Tensor], img_shapes: Sequence[tuple[int, int]],
                      scale_factors: Sequence[tuple[float, float]], cfg: TestConfig) -> list[RawDetections]:
    """A batch: cls (B,C,H,W) logits and reg (B,4,H,W) distances per level -> per image the kept
    detections (what `postprocess_single` gives image by image)."""
    bsz, num_classes = cls_scores[0].shape[:2]
    sizes = [p.shape[0] for p in priors]
    ref = cls_scores[0]
    scores = ref.new_empty((bsz, sum(sizes), num_classes))
    valid = torch.empty(scores.shape, dtype=torch.bool, device=ref.device)
    counts = torch.empty((bsz, len(sizes)), dtype=torch.long, device=ref.device)
    # sigmoid on a contiguous copy: on a strided view the CPU takes another (non-vectorized)
    # path whose values differ in the last bit from the reference's
    if _per_image_scores(ref):  # CPU: image by image, each step's data still in cache for the next
        for b in range(bsz):
            start = 0
            for c in cls_scores:
                h, w = c.shape[-2:]
                scores[b, start:start + h * w].view(h, w, num_classes).copy_(c[b].permute(1, 2, 0))
                start += h * w
            scores[b].sigmoid_()
            torch.gt(scores[b], cfg.score_thr, out=valid[b])
            counts[b] = torch.stack([count_true(v, (0, 1)) for v in valid[b].split(sizes, 0)])
    else:  # GPU: the whole batch in a few kernels (a loop would launch ~20 per image)
        start = 0
        for c in cls_scores:
            h, w = c.shape[-2:]
            scores[:, start:start + h * w].view(bsz, h, w, num_classes).copy_(c.permute(0, 2, 3, 1))
            start += h * w
        scores.sigmoid_()
        torch.gt(scores, cfg.score_thr, out=valid)
        torch.stack([count_true(v, (1, 2)) for v in valid.split(sizes, 1)], 1, out=counts)

    def decode():
        reg = torch.cat([r.permute(0, 2, 3, 1).reshape(bsz, -1, 4) for r in bbox_preds], 1)
        points = torch.cat(list(priors))
        shapes = [tuple(s) for s in img_shapes]
        if len(set(shapes)) == 1:
            return distance2bbox(points, reg, max_shape=shapes[0])
        return torch.stack([distance2bbox(points, reg[i], max_shape=s) for i, s in enumerate(shapes)])

    return _postprocess_grid(scores, sizes, decode, scale_factors, cfg, (valid, counts))


def postprocess_single(cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                       priors: list[torch.Tensor], img_shape: tuple[int, int],
                       scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """One image: cls (C,H,W) logits and reg (4,H,W) distances per level -> kept detections.

    `img_shape` is the (h, w) decoded boxes are clamped to (the reference uses the padded input
    shape); `scale_factor` (w, h) maps original pixels to input pixels."""
    return postprocess_batch([c[None] for c in cls_scores], [b[None] for b in bbox_preds], priors,
                             [img_shape], [scale_factor], cfg)[0]


def postprocess_decoded(boxes: torch.Tensor, scores: torch.Tensor, sizes: Sequence[int],
                        scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """The same steps on one image's decoded outputs: boxes (N,4) xyxy in input pixels, already
    clamped; scores (N,C) sigmoid; `sizes` the number of points per level."""
    return _postprocess_grid(scores[None], [int(n) for n in sizes], boxes[None], [scale_factor], cfg)[0]


def postprocess_decoded_batch(boxes: torch.Tensor, scores: torch.Tensor, sizes: Sequence[int],
                              scale_factors: Sequence[tuple[float, float]],
                              cfg: TestConfig) -> list[RawDetections]:
    """`postprocess_decoded` for a batch at once: boxes (B,N,4), scores (B,N,C) of images that
    share one input size (a letterboxed batch) -> per image the kept detections."""
    return _postprocess_grid(scores, [int(n) for n in sizes], boxes, scale_factors, cfg)


def postprocess_single_reference(cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                                 priors: list[torch.Tensor], img_shape: tuple[int, int],
                                 scale_factor: tuple[float, float], cfg: TestConfig) -> RawDetections:
    """The original step-by-step path (`select_topk` per level, `finish`): slow, for comparison."""
    sel_reg, sel_priors, sel_scores, sel_labels, sel_inds = [], [], [], [], []
    offset = 0
    for cls, reg, pri in zip(cls_scores, bbox_preds, priors):
        scores = cls.permute(1, 2, 0).reshape(-1, cls.shape[0]).sigmoid()
        vals, keep, labels = select_topk(scores, cfg.score_thr, cfg.nms_pre)
        sel_scores.append(vals)
        sel_labels.append(labels)
        sel_reg.append(reg.permute(1, 2, 0).reshape(-1, 4)[keep])
        sel_priors.append(pri[keep])
        sel_inds.append(keep + offset)
        offset += pri.shape[0]
    boxes_in = distance2bbox(torch.cat(sel_priors), torch.cat(sel_reg), max_shape=img_shape)
    return finish(boxes_in, torch.cat(sel_scores), torch.cat(sel_labels), torch.cat(sel_inds),
                  scale_factor, cfg)
