"""Class-aware NMS with the reference's semantics on top of torchvision's kernel."""
from __future__ import annotations

import functools

import torch
import torchvision

from .upload import upload

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


# ---------------------------------------------------------------------------------------------
# Early-stopping exact NMS: the boxes `batched_nms` keeps, found block by block in global score
# order, stopping once `max_keep` boxes are kept.
#
# Semantics (those of `batched_nms` on torchvision's CPU kernel):
# * boxes are visited by descending score, equal scores by ascending index (torchvision 0.29's
#   CPU kernel sorts stably); a box is kept unless a kept box of the same label (same image)
#   has IoU > iou_threshold with it;
# * the IoU is torchvision's float arithmetic, inter / ((area_i + area_j) - inter), compared
#   with the threshold as a double; with fewer than SPLIT_THR boxes it is computed on the
#   class-offset boxes (mmcv's trick, as `batched_nms` does - it rounds small boxes at large
#   offsets, and with negative coordinates lets labels meet), otherwise on the raw boxes;
# * the kept indices come out by descending score, equal scores by ascending index: exactly
#   `batched_nms`'s list below SPLIT_THR; above it `batched_nms` merges its per-class lists with
#   an unstable sort, so only the order among exactly equal scores can differ (and, through
#   `[:max_keep]`, which of equal scores straddling the cut is kept).
# Blocks: each block of the visiting order is checked against the boxes kept so far (only
# same-image, same-label pairs are formed, by sort + searchsorted), then resolved exactly
# inside: keep[i] = not any(keep[j] and j suppresses i, j < i) is iterated to its fixed point,
# which is unique (j < i) and reached in at most the longest suppression chain's length.
# Host syncs (CUDA): per block the progress, the two pair counts and one check per two
# fixed-point steps; a few per call; none per box. Lists keep their size under masks there
# (`compact_lists`): a boolean index is a nonzero, and the host waits for it. Where a block is
# small (`_DENSE_PAIRS`), the GPU forms every pair of it as a dense (images, s, s) mask instead
# of listing the same-key pairs: the same IoU arithmetic on more pairs, but no sort, search or
# pair count (its host sync) - on a GPU the launches and waits cost more than the arithmetic.

_MIN_BLOCK, _MAX_BLOCK = 64, 2048
_DENSE_PAIRS = 1 << 22  # at most this many (entry, entry) pairs per block in the dense form


@functools.lru_cache(maxsize=64)
def threshold_below(thr: float, dtype: torch.dtype) -> float:
    """The largest `dtype` value t <= thr: for x of that dtype, `x > t` iff `double(x) > thr`."""
    t = torch.tensor(thr, dtype=dtype)
    if float(t) > thr:
        t = torch.nextafter(t, torch.tensor(float("-inf"), dtype=dtype))
    return float(t)


def count_true(mask: torch.Tensor, dim) -> torch.Tensor:
    """mask.sum(dim) as int64, summed as uint8 -> int32 (a bool sum first converts the whole mask
    to int64, 25x slower on CPU)."""
    return mask.view(torch.uint8).sum(dim, dtype=torch.int32).long()


def nms_area(b: torch.Tensor) -> torch.Tensor:
    """Box areas as torchvision's NMS computes them (not clamped)."""
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def iou_over(b1: torch.Tensor, a1: torch.Tensor, b2: torch.Tensor, a2: torch.Tensor,
              thr: float) -> torch.Tensor:
    """IoU > thr with torchvision's CPU arithmetic (symmetric in the two boxes). Shapes broadcast:
    pairwise (..., n, 1, 4) with (..., 1, m, 4), or aligned (E, 4) with (E, 4). x and y go
    through each step together (the same per-element arithmetic in 9 kernels instead of 13)."""
    wh = (torch.minimum(b1[..., 2:], b2[..., 2:]) - torch.maximum(b1[..., :2], b2[..., :2])).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / ((a1 + a2) - inter) > thr


def compact_lists(t: torch.Tensor) -> bool:
    """Whether to shorten lists with boolean masks on `t`'s device. On the CPU that costs one
    pass; on a GPU each mask's nonzero makes the host wait for the device, so there the search
    keeps fixed-size lists and masks them instead (more arithmetic, fewer waits)."""
    return t.device.type == "cpu"


def nonzero_known(mask: torch.Tensor, total: int):
    """mask.nonzero(as_tuple=True) when the host already knows how many entries are set: on a
    GPU sized by `total` (`nonzero_static`), so the host does not wait to learn the size."""
    if compact_lists(mask):
        return mask.nonzero(as_tuple=True)
    return torch.nonzero_static(mask, size=total).unbind(1)


def _same_key_pairs(ka: torch.Tensor, kb: torch.Tensor):
    """All (i, j) with ka[i] == kb[j], without forming the len(ka) x len(kb) matrix."""
    kb_sorted, ob = kb.sort()
    lo = torch.searchsorted(kb_sorted, ka)
    cnt = torch.searchsorted(kb_sorted, ka, right=True) - lo
    total = int(cnt.sum())  # host sync: the number of pairs
    ia = torch.repeat_interleave(torch.arange(len(ka), device=ka.device), cnt, output_size=total)
    first = torch.repeat_interleave(lo - (cnt.cumsum(0) - cnt), cnt, output_size=total)
    return ia, ob[first + torch.arange(total, device=ka.device)]


def _later_same_key_pairs(key: torch.Tensor):
    """All (i, j) with i < j and key[i] == key[j]: a stable sort keeps equal keys in index order,
    so i's partners are the entries after it in its run of equal keys."""
    ks, o = key.sort(stable=True)
    n = len(key)
    nxt = torch.arange(1, n + 1, device=key.device)  # each sorted position's successor
    cnt = torch.searchsorted(ks, ks, right=True) - nxt
    total = int(cnt.sum())  # host sync: the number of pairs
    ia = torch.repeat_interleave(o, cnt, output_size=total)
    first = torch.repeat_interleave(nxt - (cnt.cumsum(0) - cnt), cnt, output_size=total)
    return ia, o[first + torch.arange(total, device=key.device)]


def _score_order(cand: "Candidates", t: int):
    """An exact prefix of each image's visiting order (score desc, index asc) covering at least
    its best `t` candidates where possible: (order (B, m), per image how many of its m entries
    are certain). Not a top-k over all N entries: a threshold `est` taken from a strided
    sample, then every candidate >= est, sorted - which is exactly the start of the order."""
    scores, valid = cand.scores, cand.valid
    bsz, n = scores.shape
    if 4 * t >= n:
        masked = scores.masked_fill(~valid, float("-inf"))
        return masked.sort(dim=1, descending=True, stable=True)[1], cand.count.tolist()
    step = max(1, t // 128)
    sample = scores[:, ::step].masked_fill(~valid[:, ::step], float("-inf"))
    est = sample.topk(min(sample.shape[1], 2 * t // step + 8), dim=1)[0][:, -1:]
    mask = (scores >= est) & valid
    cnt = count_true(mask, 1)
    counts = cnt.tolist()  # host sync
    if max(counts) > 16 * t:  # a poor estimate: plain top-k (its last value may be tied)
        masked = scores.masked_fill(~valid, float("-inf"))
        vals, idx = masked.topk(t, dim=1)
        idx = idx.sort(dim=1)[0]
        order = idx.gather(1, masked.gather(1, idx).sort(dim=1, descending=True, stable=True)[1])
        return order, torch.minimum(count_true(vals > vals[:, -1:], 1), cand.count).tolist()
    rows, cols = nonzero_known(mask, sum(counts))  # row-major, ascending index within a row
    if bsz == 1:  # one row, no padding: sort its candidates (4 launches instead of 12)
        return cols[scores[0, cols].sort(descending=True, stable=True)[1]][None], counts
    at = torch.arange(len(rows), device=rows.device) - (cnt.cumsum(0) - cnt)[rows]
    vals = scores.new_full((bsz, max(counts)), float("-inf"))
    idx = torch.zeros(vals.shape, dtype=torch.long, device=vals.device)
    vals[rows, at] = scores[rows, cols]
    idx[rows, at] = cols
    return idx.gather(1, vals.sort(dim=1, descending=True, stable=True)[1]), counts


class Candidates:
    """A padded batch of NMS candidates: `valid` (B,N) marks them; entry e of image b has score
    scores[b,e], label labels[b,e] (or labels(e), then in [0, num_labels)) and box
    boxes[b, prior_of(e)] (or boxes[b,e]). `offset_mode` (B,) says which images use class-offset
    boxes (default: fewer than split_thr candidates); `pos_limit` (B,) caps how many candidates
    an image may visit (see `greedy_blocks`); `count` (B,) = valid.sum(1) if known; `host`:
    another list's `host()` where counts, limits and modes are the same."""

    def __init__(self, boxes, labels, scores, valid, split_thr=SPLIT_THR, prior_of=None,
                 offset_mode=None, pos_limit=None, num_labels=None, count=None, host=None):
        self.boxes, self.labels, self.scores, self.valid = boxes, labels, scores, valid
        self.prior_of, self.pos_limit, self.num_labels = prior_of, pos_limit, num_labels
        self.count = count_true(valid, 1) if count is None else count
        self.offset_mode = self.count < split_thr if offset_mode is None else offset_mode
        self._host = host

    def host(self) -> tuple[list[int], list[int], bool]:
        """Per image the candidate count and how many may be visited, and whether any image is
        in offset mode: read to the host once, in one sync."""
        if self._host is None:
            rows = [self.count, self.offset_mode.to(self.count)]
            if self.pos_limit is not None:
                rows.append(self.pos_limit.to(self.count))
            vals = torch.stack(rows).tolist()  # host sync
            limits = vals[0] if self.pos_limit is None else [min(c, p) for c, p in zip(vals[0], vals[2])]
            self._host = (vals[0], limits, any(vals[1]))
        return self._host

    def prepare(self, thr: float) -> None:
        """Label range (for grouping keys), class offsets of offset-mode images, and which of
        those need cross-label pairs (`self.cross`)."""
        if callable(self.labels):
            self.label_min, self.label_span = 0, self.num_labels
        else:
            lab = self.labels[self.valid]
            self.label_min = int(lab.min())
            self.label_span = int(lab.max()) - self.label_min + 1
        self.scale = self.cross = None
        if self.host()[2]:
            # per image boxes.max() over its candidates, +1, as `batched_nms` computes it
            boxes = self.boxes
            used = self.valid if self.prior_of is None else \
                self.valid.view(self.valid.shape[0], boxes.shape[1], -1).any(-1)
            mx = boxes.masked_fill(~used[..., None], float("-inf")).amax(dim=(1, 2))
            mn = boxes.masked_fill(~used[..., None], float("inf")).amin(dim=(1, 2))
            self.scale = torch.where(self.offset_mode, mx + 1,  # batched_nms's max + 1, no upload
                                     torch.zeros_like(mx))
            # Boxes of different labels can only suppress each other through the offsets if
            # their offset x-ranges overlap. They cannot when every coordinate lies in [0, max],
            # labels are >= 0, (max label + 1) * (max + 1) < 1/eps (2**23 in float32: every
            # rounding of an offset or offset coordinate < 0.5, so consecutive labels' ranges
            # stay >= max + 0.25 apart) and thr >= 0 (IoU 0 or NaN never exceeds it): then
            # only same-label pairs need to be looked at.
            lab_end = self.label_min + self.label_span
            bound = 1.0 / torch.finfo(boxes.dtype).eps
            safe = (mn >= 0) & (self.scale * lab_end < bound) & (self.label_min >= 0) & (thr >= 0)
            self.cross = self.offset_mode & ~safe

    def gather(self, idx, r):
        """Entries `idx` (b,s) of images `r` -> their NMS-frame boxes, areas and labels."""
        prior = idx if self.prior_of is None else self.prior_of(idx)
        b = self.boxes[r].gather(1, prior[..., None].expand(-1, -1, 4))
        lab = self.labels(idx) if callable(self.labels) else self.labels[r].gather(1, idx)
        if self.scale is not None:
            off = lab.to(b) * self.scale[r, None]
            b = torch.where(self.offset_mode[r, None, None], b + off[..., None], b)
        return b, nms_area(b), lab

    def group_key(self, lab, r):
        """Which pairs may interact: same image and label; in `cross` images every pair (the
        offset boxes are all torchvision sees). `lab` (b,s) of images `r` -> (b,s) int64."""
        rows = torch.arange(lab.shape[0], device=lab.device)[:, None] * self.label_span
        key = lab - self.label_min
        if self.cross is not None:
            key = key.masked_fill(self.cross[r, None], 0)
        return rows + key


def greedy_blocks(cand: Candidates, iou_threshold: float, max_keep: int | None):
    """Greedy NMS of every image, block by block in score order, until `max_keep` kept or the
    candidates run out. Returns (kept indices per image, images that hit their `pos_limit`
    first - their result is incomplete)."""
    count = cand.count
    bsz, n = cand.valid.shape
    device = count.device
    counts, limits, _ = cand.host()  # sizes the loop
    cap = max(counts) if max_keep is None else min(max_keep, max(counts))
    if cap <= 0:
        return [torch.zeros((0,), dtype=torch.long, device=device) for _ in range(bsz)], []
    thr = threshold_below(float(iou_threshold), cand.boxes.dtype)
    cand.prepare(thr)
    # kept boxes per image, in visiting order; one spare slot absorbs writes beyond `cap`
    k_idx, k_box, k_area, k_lab = _kept_buffers(bsz, cap + 1, cand.boxes)
    k_cnt = torch.zeros((bsz,), dtype=torch.long, device=device)
    slots = torch.arange(cap + 1, device=device)

    t = min(n, max(4 * cap, 1024))
    order, certain = _score_order(cand, t)
    pos, overflow = 0, []
    kept_now = [0] * bsz
    while True:
        todo = [b for b in range(bsz) if kept_now[b] < cap and pos < counts[b]]
        overflow += [b for b in todo if pos >= limits[b]]
        todo = [b for b in todo if pos < limits[b]]
        if not todo:
            break
        end = min(min(limits[b] for b in todo), min(certain[b] for b in todo))
        if end <= pos:  # the ordered prefix ran out: order a longer one (it extends this one)
            t = min(n, 4 * t)
            order, certain = _score_order(cand, t)
            continue
        # block size: what is still missing, at the survival rate seen so far
        seen = sum(min(pos, counts[b]) for b in todo)
        rate = max(sum(kept_now[b] for b in todo) / seen, 1 / 64) if seen else 1.0
        need = cap - min(kept_now[b] for b in todo)
        size = min(_MAX_BLOCK, max(_MIN_BLOCK, int(need / rate * 1.25) + 16))
        size = min(size, end - pos, max(counts[b] for b in todo) - pos)
        r = upload(todo, device=device) if len(todo) < bsz else slice(None)
        cnt = k_cnt[r]
        idx = order[r, pos:pos + size]
        alive = (pos + torch.arange(size, device=device))[None, :] < count[r, None]
        bb, ba, bl = cand.gather(idx, r)
        kmax = max(kept_now[b] for b in todo)
        dense = not compact_lists(bb) and len(todo) * size * max(size, kmax) <= _DENSE_PAIRS
        resolve = _resolve_dense if dense else _resolve_pairs
        kmask = resolve(cand, bb, ba, bl, alive, r, k_box, k_area, k_lab, cnt, kmax, thr, slots)
        slot = torch.where(kmask, cnt[:, None] + kmask.cumsum(1) - 1, cap).clamp_(max=cap)
        rows = torch.arange(len(todo), device=device)[:, None]
        for buf, val in ((k_idx, idx), (k_box, bb), (k_area, ba), (k_lab, bl)):
            if isinstance(r, slice):  # every image: write in place
                buf[rows, slot] = val
            else:
                sub = buf[r]
                sub[rows, slot] = val
                buf[r] = sub
        k_cnt[r] = (cnt + kmask.sum(1)).clamp_(max=cap)
        pos += size
        kept_now = k_cnt.tolist()  # host sync, one per block: early stop and block size
    return [k_idx[b, :c] for b, c in enumerate(kept_now)], overflow  # read when the loop ended


def _kept_buffers(bsz: int, slots: int, boxes: torch.Tensor):
    """(index, box, area, label) buffers of the kept boxes. Left unfilled: only the first
    k_cnt[b] slots of an image are ever read, the rest is masked (a test fills them with boxes
    that would suppress everything, to prove it)."""
    long = dict(dtype=torch.long, device=boxes.device)
    return (torch.empty((bsz, slots), **long), boxes.new_empty((bsz, slots, 4)),
            boxes.new_empty((bsz, slots)), torch.empty((bsz, slots), **long))


def _fixed_point(live: torch.Tensor, step) -> torch.Tensor:
    """The greedy keep mask: keep[i] = live[i] and no kept j < i suppresses i, iterated from
    `live` to its unique fixed point (reached in at most the longest suppression chain's
    length of steps)."""
    keep = live
    while True:
        keep = step(keep)
        after = step(keep)
        if torch.equal(keep, after):  # host sync, one per two iterations (usually one per block)
            return keep
        keep = after


def _resolve_dense(cand, bb, ba, bl, alive, r, k_box, k_area, k_lab, cnt, kmax: int, thr: float, slots):
    """One block's keep mask (b, s) from dense pair masks: (b, s, kmax) against the boxes kept
    so far, (b, s, s) inside the block. Keys: same image and label (`group_key`); entries past
    an image's candidates are never live."""
    key = cand.group_key(bl, r)
    live = alive
    if kmax:  # entries suppressed by a box kept in an earlier block are never kept
        k_key = cand.group_key(k_lab[r, :kmax], r)
        k_live = slots[None, :kmax] < cnt[:, None]
        hit = iou_over(bb[:, :, None], ba[:, :, None], k_box[r, :kmax][:, None], k_area[r, :kmax][:, None], thr)
        hit &= (key[:, :, None] == k_key[:, None, :]) & k_live[:, None, :]
        live = alive & ~hit.any(2)
    size = bb.shape[1]
    earlier = torch.ones((size, size), dtype=torch.bool, device=bb.device).triu_(1)  # [j, i]: j < i
    sup = iou_over(bb[:, :, None], ba[:, :, None], bb[:, None], ba[:, None], thr)
    sup &= (key[:, :, None] == key[:, None, :]) & earlier  # sup[b, j, i]: j suppresses i if kept
    return _fixed_point(live, lambda keep: live & ~(sup & keep[:, :, None]).any(1))


def _resolve_pairs(cand, bb, ba, bl, alive, r, k_box, k_area, k_lab, cnt, kmax: int, thr: float, slots):
    """One block's keep mask (b, s) from the lists of same-key pairs (`_same_key_pairs`,
    `_later_same_key_pairs`): what a CPU does, and a GPU with large blocks."""
    device = bb.device
    # the block as a flat list (row-major: visiting order within an image) plus one spare
    # entry `m`, never kept: pairs that are not edges point at it (no boolean indexing, whose
    # nonzero is a host sync). Entries past an image's candidates get keys of their own.
    m = alive.numel()
    i_box, i_area = bb.view(-1, 4), ba.view(-1)
    own = -2 - torch.arange(m, device=device)  # keys that match nothing
    i_key = torch.where(alive.view(-1), cand.group_key(bl, r).view(-1), own)
    live = torch.cat([alive.view(-1), alive.new_zeros(1)])
    if kmax:  # entries suppressed by a box kept in an earlier block are never kept
        k_key = cand.group_key(k_lab[r, :kmax], r).masked_fill_(slots[None, :kmax] >= cnt[:, None], -1)
        ia, ib = _same_key_pairs(i_key, k_key.view(-1))
        hit = iou_over(i_box[ia], i_area[ia], k_box[r, :kmax].reshape(-1, 4)[ib],
                        k_area[r, :kmax].reshape(-1)[ib], thr)
        live[torch.where(hit, ia, m)] = False
        i_key = torch.where(live[:m], i_key, own)  # and pair with nothing in the block
    # inside the block: edges j -> i, j visited first and suppressing i if j is kept
    ia, ib = _later_same_key_pairs(i_key)
    hit = iou_over(i_box[ia], i_area[ia], i_box[ib], i_area[ib], thr)
    if compact_lists(hit):  # only the edges, for the iterations below
        src, dst = ia[hit], ib[hit]
    else:  # every pair, those that are not edges from `m`
        src, dst = torch.where(hit, ia, m), ib

    def step(keep):  # keep[i] = live[i] and no kept j suppresses i; keep[m] stays False
        new = live.clone()
        new[torch.where(keep[src], dst, m)] = False
        return new

    return _fixed_point(live, step)[:m].view(alive.shape)


def batched_nms_topk_padded(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                            valid: torch.Tensor, iou_threshold: float, max_keep: int | None = None,
                            split_thr: int = SPLIT_THR) -> list[torch.Tensor]:
    """Per image of a padded batch: boxes (B,N,4), scores (B,N), labels (B,N), valid (B,N) bool
    -> list of kept indices into N; image b's equal
    `batched_nms(boxes[b][valid[b]], ...)[:max_keep]` mapped back to N (see the semantics above).
    Images never interact."""
    if boxes.shape[1] == 0:
        return [torch.zeros((0,), dtype=torch.long, device=boxes.device) for _ in range(boxes.shape[0])]
    return greedy_blocks(Candidates(boxes, labels, scores, valid.bool(), split_thr),
                          iou_threshold, max_keep)[0]


def batched_nms_topk(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                     iou_threshold: float, max_keep: int | None = None,
                     split_thr: int = SPLIT_THR) -> torch.Tensor:
    """`batched_nms(boxes, scores, labels, iou_threshold)[:max_keep]`, found by visiting only as
    many boxes as it takes to keep `max_keep` (see the semantics above)."""
    valid = torch.ones((1, boxes.shape[0]), dtype=torch.bool, device=boxes.device)
    return batched_nms_topk_padded(boxes[None], scores[None], labels[None], valid, iou_threshold,
                                   max_keep, split_thr)[0]
