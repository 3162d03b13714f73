"""Rotated-box math for RTMDet-R in plain PyTorch (CPU and CUDA, no compiled ops).

Boxes are (cx, cy, w, h, theta), theta in radians, corners = centre + R(theta) (+-w/2, +-h/2) with
R = [[cos, -sin], [sin, cos]] in image coordinates (positive theta turns clockwise on screen), as in
mmrotate's `RotatedBoxes` and mmcv's rotated ops with `clockwise=True`.

- `box_iou_rotated` / `nms_rotated` / `batched_nms_rotated`: mmcv 2.1.0 semantics, but the
  intersection area is exact (float64 convex clipping) where mmcv's float32 kernel is not.
- `diff_iou_rotated`: a port of mmcv's differentiable `diff_iou_rotated_2d` (including the CUDA
  vertex-sorting kernel), for the rotated IoU loss.
- `distance2obb` / `obb2distance` / `rescale_rotated` / `regularize_le90` /
  `points_in_rotated_boxes`: literal ports of mmrotate's coder and `RotatedBoxes` methods.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# mmcv: a box whose w*h is below this has IoU 0 with everything.
MIN_AREA = 1e-14
# mmcv batched_nms: above this many boxes NMS runs class by class.
SPLIT_THR = 10000
# pairs per clipping batch (bounds memory: ~1 KB per pair in flight)
_PAIR_CHUNK = 1 << 16


# --------------------------------------------------------------------------- conversions

def obb2poly(boxes: Tensor) -> Tensor:
    """(..., 5) -> (..., 4, 2) corners in mmrotate `rbox2qbox` order: c+v1+v2, c+v1-v2, c-v1-v2,
    c-v1+v2 with v1 = w/2 (cos, sin), v2 = h/2 (-sin, cos)."""
    ctr, w, h, t = torch.split(boxes, (2, 1, 1, 1), dim=-1)
    cos, sin = torch.cos(t), torch.sin(t)
    v1 = torch.cat([w / 2 * cos, w / 2 * sin], dim=-1)
    v2 = torch.cat([-h / 2 * sin, h / 2 * cos], dim=-1)
    return torch.stack([ctr + v1 + v2, ctr + v1 - v2, ctr - v1 - v2, ctr - v1 + v2], dim=-2)


def regularize_le90(boxes: Tensor) -> Tensor:
    """mmrotate `RotatedBoxes.regularize_boxes('le90')`: w >= h (swap unless w > h strictly),
    theta in [-pi/2, pi/2). Same box, unique representation (the loss compares against it)."""
    start = -90 / 180 * np.pi
    x, y, w, h, t = boxes.unbind(dim=-1)
    longer = w > h
    w_ = torch.where(longer, w, h)
    h_ = torch.where(longer, h, w)
    t = torch.where(longer, t, t + np.pi / 2)
    t = ((t - start) % np.pi) + start
    return torch.stack([x, y, w_, h_, t], dim=-1)


def norm_angle_le90(angle: Tensor) -> Tensor:
    """Wrap into [-pi/2, pi/2) with Python-style modulo (mmrotate `norm_angle(.., 'le90')`)."""
    return (angle + np.pi / 2) % np.pi - np.pi / 2


def distance2obb(points: Tensor, distance: Tensor, angle_version: str = "le90") -> Tensor:
    """Decode (l, t, r, b, theta) at `points` into (cx, cy, w, h, theta), as mmrotate's
    `DistanceAnglePointCoder.decode`: w = l + r, h = t + b, centre shifted by
    R(theta) ((r - l)/2, (b - t)/2); w/h are NOT swapped, theta is only wrapped."""
    if angle_version != "le90":
        raise NotImplementedError("only angle_version='le90' is used by RTMDet-R")
    dist, angle = distance.split([4, 1], dim=-1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.cat([cos, -sin, sin, cos], dim=-1).reshape(*angle.shape[:-1], 2, 2)
    wh = dist[..., :2] + dist[..., 2:]
    offset_t = (dist[..., 2:] - dist[..., :2]) / 2
    offset = torch.matmul(rot, offset_t[..., None]).squeeze(-1)
    ctr = points[..., :2] + offset
    return torch.cat([ctr, wh, norm_angle_le90(angle)], dim=-1)


def obb2distance(points: Tensor, boxes: Tensor, max_dis: float | None = None,
                 eps: float = 0.1) -> Tensor:
    """Encode (N, 5) boxes as (l, t, r, b, theta) from (N, 2) points (mmrotate
    `DistanceAnglePointCoder.encode`); the inverse of `distance2obb` up to the angle wrap."""
    ctr, wh, angle = torch.split(boxes, [2, 2, 1], dim=-1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.cat([cos, sin, -sin, cos], dim=-1).reshape(-1, 2, 2)
    offset = torch.matmul(rot, (points - ctr)[..., None]).squeeze(-1)
    w, h = wh[..., 0], wh[..., 1]
    ox, oy = offset[..., 0], offset[..., 1]
    left, right, top, bottom = w / 2 + ox, w / 2 - ox, h / 2 + oy, h / 2 - oy
    if max_dis is not None:
        left, top, right, bottom = (v.clamp(min=0, max=max_dis - eps) for v in (left, top, right, bottom))
    return torch.stack((left, top, right, bottom, angle.squeeze(-1)), -1)


def rescale_rotated(boxes: Tensor, scale_w: float, scale_h: float) -> Tensor:
    """mmrotate `RotatedBoxes.rescale_((scale_w, scale_h))`: centres scaled, w/h scaled along their
    own directions, theta re-derived (an anisotropic scale turns the box)."""
    ctrs, w, h, t = torch.split(boxes, [2, 1, 1, 1], dim=-1)
    cos, sin = torch.cos(t), torch.sin(t)
    ctrs = ctrs * ctrs.new_tensor([scale_w, scale_h])
    w = w * torch.sqrt((scale_w * cos) ** 2 + (scale_h * sin) ** 2)
    h = h * torch.sqrt((scale_w * sin) ** 2 + (scale_h * cos) ** 2)
    t = torch.atan2(scale_w * sin, scale_h * cos)
    return torch.cat([ctrs, w, h, t], dim=-1)


def points_in_rotated_boxes(points: Tensor, boxes: Tensor, eps: float = 0.01) -> Tensor:
    """(P, 2) points x (M, 5) boxes -> (P, M) bool: strictly inside by `eps` in the box frame
    (mmrotate `RotatedBoxes.find_inside_points`, the assigner's candidate test)."""
    boxes, points = boxes[None, :, :], points[:, None, :]
    ctrs, wh, t = torch.split(boxes, [2, 2, 1], dim=-1)
    cos, sin = torch.cos(t), torch.sin(t)
    mat = torch.cat([cos, sin, -sin, cos], dim=-1).reshape(*boxes.shape[:-1], 2, 2)
    offset = torch.matmul(mat, (points - ctrs)[..., None]).squeeze(-1)
    ox, oy = offset[..., 0], offset[..., 1]
    w, h = wh[..., 0], wh[..., 1]
    return (ox <= w / 2 - eps) & (ox >= -w / 2 + eps) & (oy <= h / 2 - eps) & (oy >= -h / 2 + eps)


# --------------------------------------------------------------------------- exact IoU

def _clip(poly: Tensor, p0: Tensor, p1: Tensor) -> Tensor:
    """One Sutherland-Hodgman step: keep the part of each (K, W, 2) polygon right of p0->p1
    (inside of a clockwise rectangle), boundary included. Output width = the largest vertex count;
    shorter polygons are padded by repeating their last vertex (zero-length edges are harmless)."""
    e = (p1 - p0)[:, None, :]
    rel = poly - p0[:, None, :]
    d = e[..., 1] * rel[..., 0] - e[..., 0] * rel[..., 1]
    nxt, dn = poly.roll(-1, 1), d.roll(-1, 1)
    inside, crossing = d >= 0, (d >= 0) != (dn >= 0)
    t = d / torch.where(crossing, d - dn, torch.ones_like(d))
    x = poly + t[..., None] * (nxt - poly)
    k, w = d.shape
    cand = torch.stack([poly, x], dim=2).reshape(k, 2 * w, 2)
    emit = torch.stack([inside, crossing], dim=2).reshape(k, 2 * w)
    count = emit.sum(1)
    width = max(int(count.max()), 1)
    pos = torch.where(emit, emit.cumsum(1) - 1, torch.full_like(count[:, None], width))
    out = poly.new_zeros(k, width + 1, 2).scatter_(1, pos[..., None].expand(-1, -1, 2), cand)
    fill = torch.minimum(torch.arange(width, device=poly.device)[None], (count - 1).clamp(min=0)[:, None])
    return out.gather(1, fill[..., None].expand(-1, -1, 2))


def _pair_corners(b1: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
    """float64 corners of both boxes of each pair, relative to the pair's mean centre (as mmcv
    shifts, to keep precision at large coordinates)."""
    shift = (b1[:, :2] + b2[:, :2]) / 2
    c1 = obb2poly(torch.cat([b1[:, :2] - shift, b1[:, 2:]], 1))
    c2 = obb2poly(torch.cat([b2[:, :2] - shift, b2[:, 2:]], 1))
    return c1, c2


def _intersection_area(b1: Tensor, b2: Tensor) -> Tensor:
    """Exact-in-float64 area of b1 ∩ b2 for aligned (K, 5) float64 pairs with w*h > 0.

    Corners are clockwise for any w*h > 0 (both negative = the same rectangle turned by pi), so
    clipping box 1 by the right side of box 2's four edges leaves the intersection polygon.
    The shoelace sum runs column by column so that padding (exact zeros) never changes it."""
    poly, clip = _pair_corners(b1, b2)
    for k in range(4):
        poly = _clip(poly, clip[:, k], clip[:, (k + 1) % 4])
    nxt = poly.roll(-1, 1)
    cross = poly[..., 0] * nxt[..., 1] - poly[..., 1] * nxt[..., 0]
    total = torch.zeros_like(cross[:, 0])
    for j in range(cross.shape[1]):
        total = total + cross[:, j]
    return total.abs() / 2


def _valid(boxes: Tensor) -> Tensor:
    """mmcv's test: w*h in the boxes' own dtype, compared in double with 1e-14."""
    return (boxes[..., 2] * boxes[..., 3]).double() >= MIN_AREA


def _pair_iou(b1: Tensor, b2: Tensor, iof: bool) -> Tensor:
    """float64 IoU (or IoF) of aligned (K, 5) float64 pairs, both boxes valid (w*h >= 1e-14)."""
    out = b1.new_zeros(b1.shape[0])
    for s in range(0, b1.shape[0], _PAIR_CHUNK):
        p, q = b1[s:s + _PAIR_CHUNK], b2[s:s + _PAIR_CHUNK]
        inter = _intersection_area(p, q)
        a1, a2 = p[:, 2] * p[:, 3], q[:, 2] * q[:, 3]
        out[s:s + _PAIR_CHUNK] = inter / (a1 if iof else a1 + a2 - inter)
    return out


def _half_extents(b: Tensor) -> Tensor:
    """(N, 2) half width/height of each box's axis-aligned hull, slightly inflated so that the
    hull-overlap pre-filter can never drop a pair with positive intersection."""
    c, s = torch.cos(b[:, 4]).abs(), torch.sin(b[:, 4]).abs()
    w, h = b[:, 2].abs(), b[:, 3].abs()
    ext = torch.stack([w * c + h * s, w * s + h * c], 1) / 2
    return ext * (1 + 1e-9) + 1e-9 * (b[:, :2].abs() + 1)


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor, aligned: bool = False, mode: str = "iou") -> Tensor:
    """mmcv `box_iou_rotated` (clockwise=True): (N, 5) x (M, 5) -> (N, M), or (N,) if `aligned`.

    area = w*h; 0 where either area < 1e-14; iou = inter / (a1 + a2 - inter), iof = inter / a1.
    The intersection is exact (float64 clipping), so degenerate pairs (same box written with
    theta + pi, collinear edges, slivers) come out right where mmcv's float32 kernel does not.
    Result dtype = input dtype (float32 unless float64 is given)."""
    if mode not in ("iou", "iof"):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    out_dtype = boxes1.dtype if boxes1.dtype in (torch.float32, torch.float64) else torch.float32
    n, m = boxes1.shape[0], boxes2.shape[0]
    iof = mode == "iof"
    b1, b2 = boxes1.to(out_dtype), boxes2.to(out_dtype)
    ok1, ok2 = _valid(b1), _valid(b2)
    b1, b2 = b1.double(), b2.double()
    if aligned:
        if n != m:
            raise ValueError("aligned boxes need the same length")
        out = torch.zeros(n, dtype=torch.float64, device=b1.device)
        i = (ok1 & ok2).nonzero().squeeze(1)
        if i.numel():
            out[i] = _pair_iou(b1[i], b2[i], iof)
        return out.to(out_dtype)
    out = torch.zeros(n, m, dtype=out_dtype, device=b1.device)
    if n == 0 or m == 0:
        return out
    e1, e2 = _half_extents(b1), _half_extents(b2)
    rows = max(1, (1 << 20) // m)
    for s in range(0, n, rows):
        gap = (b1[s:s + rows, None, :2] - b2[None, :, :2]).abs() - (e1[s:s + rows, None] + e2[None])
        cand = (gap <= 0).all(-1) & ok1[s:s + rows, None] & ok2[None]
        i, j = cand.nonzero(as_tuple=True)
        if i.numel():
            out[i + s, j] = _pair_iou(b1[i + s], b2[j], iof).to(out_dtype)
    return out


def rbbox_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", is_aligned: bool = False) -> Tensor:
    """mmrotate `rbbox_overlaps` (the assigner's IoU): w, h clamped to >= 1e-3 and centres to
    +-1e7 before `box_iou_rotated`."""
    b1, b2 = boxes1.detach().clone(), boxes2.detach().clone()
    for b in (b1, b2):
        b[:, 2:4].clamp_(min=1e-3)
        b[:, :2].clamp_(min=-1e7, max=1e7)
    return box_iou_rotated(b1, b2, aligned=is_aligned, mode=mode)


# --------------------------------------------------------------------------- NMS

_PAIR_GEN_CHUNK = 1 << 20  # candidate pairs generated at a time


def _range_pairs(rows: Tensor, first: Tensor, count: Tensor):
    """Yield (p, q) index chunks with q running over [first[k], first[k] + count[k]) for each
    p = rows[k], about _PAIR_GEN_CHUNK pairs at a time."""
    count = count.clamp(min=0)
    csum = count.cumsum(0)
    n, k0 = rows.numel(), 0
    while k0 < n:
        base = int(csum[k0 - 1]) if k0 else 0
        k1 = min(max(int(torch.searchsorted(csum, base + _PAIR_GEN_CHUNK, right=True)), k0 + 1), n)
        c = count[k0:k1]
        total = int(csum[k1 - 1]) - base
        if total:
            off = torch.repeat_interleave(first[k0:k1] - (c.cumsum(0) - c), c)
            yield torch.repeat_interleave(rows[k0:k1], c), torch.arange(total, device=rows.device) + off
        k0 = k1


class _Hulls:
    """Axis-aligned hulls and areas of boxes, for the IoU upper bound that decides which pairs
    need an exact IoU: IoU = I / (a1 + a2 - I) grows with I, and I <= min(hull overlap, a1, a2)."""

    def __init__(self, b: Tensor, area: Tensor, thr: float):
        e = _half_extents(b)
        self.lo, self.hi, self.area, self.thr = b[:, :2] - e, b[:, :2] + e, area, thr * (1 - 1e-6)

    def keep(self, p: Tensor, q: Tensor) -> Tensor:
        ov = (torch.minimum(self.hi[p], self.hi[q]) - torch.maximum(self.lo[p], self.lo[q])).clamp(min=0).prod(1)
        a1, a2 = self.area[p], self.area[q]
        inter = torch.minimum(ov, torch.minimum(a1, a2))
        return inter / (a1 + a2 - inter) >= self.thr

    def pairs_within(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Pairs of `ids` (each once) whose hulls overlap in x and whose bound reaches thr."""
        ids = ids[torch.argsort(self.lo[ids, 0])]
        lo, hi = self.lo[ids, 0].contiguous(), self.hi[ids, 0].contiguous()
        k = torch.arange(ids.numel(), device=ids.device)
        end = torch.searchsorted(lo, hi, right=True)
        return self._collect(_range_pairs(ids, k + 1, end - k - 1), ids)

    def pairs_between(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Pairs (a_k, b_l) whose hulls overlap in x and whose bound reaches thr: those with
        lo_a in [lo_b, hi_b] plus those with lo_b in (lo_a, hi_a]."""
        a, b = a[torch.argsort(self.lo[a, 0])], b[torch.argsort(self.lo[b, 0])]
        la, ha, lb, hb = (t.contiguous() for t in (self.lo[a, 0], self.hi[a, 0], self.lo[b, 0], self.hi[b, 0]))
        first = torch.searchsorted(la, lb)
        pa, qa = self._collect(_range_pairs(b, first, torch.searchsorted(la, hb, right=True) - first), a)
        first = torch.searchsorted(lb, la, right=True)
        qb, pb = self._collect(_range_pairs(a, first, torch.searchsorted(lb, ha, right=True) - first), b)
        return torch.cat([qa, qb]), torch.cat([pa, pb])

    def _collect(self, chunks, target: Tensor) -> tuple[Tensor, Tensor]:
        """(row id, target id) of the chunks' pairs that pass the bound."""
        ps, qs = [], []
        for p, q in chunks:
            q = target[q]
            ok = self.keep(p, q)
            ps.append(p[ok])
            qs.append(q[ok])
        if not ps:
            empty = target.new_zeros(0)
            return empty, empty
        return torch.cat(ps), torch.cat(qs)


def _suppresses(b: Tensor, i: Tensor, j: Tensor, thr: float) -> Tensor:
    """IoU(b[i], b[j]) >= thr with the IoU rounded to float32, as mmcv's kernel compares it."""
    if i.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=b.device)
    return _pair_iou(b[i], b[j], iof=False).float() >= thr


def nms_rotated(boxes: Tensor, scores: Tensor, iou_thr: float, block: int = 1024) -> Tensor:
    """mmcv CPU `nms_rotated`: indices kept, in processing order (score descending).

    Order = `scores.sort(descending=True)` on the CPU, the very (unstable) call mmcv's CPU kernel
    makes, so exact ties come out in the same order as the reference. Greedy: a box is dropped if
    its IoU (float32) with an already kept box is >= iou_thr (float32). Runs block by block over
    that order (64 boxes, doubling up to `block`); an exact IoU is computed only for a pair of
    (kept or live in-block box, later box) whose hull bound can reach the threshold."""
    n = boxes.shape[0]
    dev = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    order = torch.sort(scores.detach().cpu(), descending=True)[1].to(dev)
    thr = float(np.float32(iou_thr))
    if thr <= 0:  # every IoU (even 0) reaches the threshold: only the top box survives
        return order[:1]
    b = boxes.detach()[order]
    valid = _valid(b)
    b = b.double()
    hulls = _Hulls(b, torch.where(valid, b[:, 2] * b[:, 3], torch.zeros_like(b[:, 2])), thr)
    kept = torch.zeros(n, dtype=torch.bool, device=dev)
    kept_valid = torch.zeros(0, dtype=torch.long, device=dev)  # kept boxes that can suppress
    s, size = 0, min(64, block)
    while s < n:
        e = min(s + size, n)
        live = valid[s:e].clone()
        ids = torch.arange(s, e, device=dev)[live]
        if kept_valid.numel() and ids.numel():  # suppression by boxes kept in earlier blocks
            i, j = hulls.pairs_between(kept_valid, ids)
            live[j[_suppresses(b, i, j, thr)] - s] = False
            ids = torch.arange(s, e, device=dev)[live]
        p, q = hulls.pairs_within(ids)
        i, j = torch.minimum(p, q), torch.maximum(p, q)
        hit = _suppresses(b, i, j, thr)
        si, sj = (i[hit] - s).cpu().numpy(), (j[hit] - s).cpu().numpy()
        o = np.argsort(si, kind="stable")
        si, sj = si[o], sj[o]
        alive = live.cpu().numpy()
        starts = np.flatnonzero(np.r_[True, si[1:] != si[:-1]]) if len(si) else si
        for f, g in zip(starts, np.r_[starts[1:], len(si)]):  # in order, only boxes that suppress
            if alive[si[f]]:
                alive[sj[f:g]] = False
        alive = torch.from_numpy(alive).to(dev)
        kept[s:e] = alive | ~valid[s:e]  # zero-area boxes overlap nothing: always kept
        kept_valid = torch.cat([kept_valid, torch.arange(s, e, device=dev)[alive]])
        s, size = e, min(2 * size, block)
    return order[kept.nonzero().squeeze(1)]


def batched_nms_rotated(boxes: Tensor, scores: Tensor, labels: Tensor, iou_thr: float,
                        split_thr: int = SPLIT_THR) -> Tensor:
    """mmcv `batched_nms` with `nms_rotated`: class-aware by shifting only the centres by
    label * (max(cx, cy) + max(w, h) + 1) in the boxes' dtype. Below `split_thr` boxes one NMS
    (keep in NMS order); otherwise NMS class by class on the shifted boxes, then all kept indices
    re-sorted by score (descending, unstable sort as mmcv)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    max_coord = boxes[..., :2].max() + boxes[..., 2:4].max()
    offsets = labels.to(boxes) * (max_coord + torch.tensor(1).to(boxes))
    shifted = torch.cat([boxes[..., :2] + offsets[:, None], boxes[..., 2:5]], dim=-1)
    if boxes.shape[0] < split_thr:
        return nms_rotated(shifted, scores, iou_thr)
    total = torch.zeros_like(scores, dtype=torch.bool)
    for c in torch.unique(labels):
        idx = (labels == c).nonzero(as_tuple=False).view(-1)
        total[idx[nms_rotated(shifted[idx], scores[idx], iou_thr)]] = True
    keep = total.nonzero(as_tuple=False).view(-1)
    return keep[scores[keep].sort(descending=True)[1]]


# --------------------------------------------------------------------------- differentiable IoU

_EPS = 1e-8  # mmcv diff_iou_rotated EPSILON (python and kernel)


def _box2corners(box: Tensor) -> Tensor:
    """(N, 5) -> (N, 4, 2) as mmcv `box2corners`: local (+-w/2, +-h/2) in the order
    (+,+), (-,+), (-,-), (+,-), rotated by R(theta) with a batched matmul."""
    x, y, w, h, a = box.split([1, 1, 1, 1, 1], dim=-1)
    xs = box.new_tensor([0.5, -0.5, -0.5, 0.5]) * w
    ys = box.new_tensor([0.5, 0.5, -0.5, -0.5]) * h
    corners = torch.stack([xs, ys], dim=-1)
    sin, cos = torch.sin(a), torch.cos(a)
    rot_t = torch.stack([torch.cat([cos, sin], -1), torch.cat([-sin, cos], -1)], dim=-2)
    return torch.bmm(corners, rot_t) + torch.cat([x, y], -1)[:, None, :]


def _edge_intersections(c1: Tensor, c2: Tensor) -> tuple[Tensor, Tensor]:
    """All 4x4 edge-edge crossings strictly inside both segments (mmcv `box_intersection`;
    collinear edges give none). (N, 16, 2) points (zero where invalid) and (N, 16) mask."""
    l1 = torch.cat([c1, c1[:, [1, 2, 3, 0]]], dim=-1)[:, :, None]
    l2 = torch.cat([c2, c2[:, [1, 2, 3, 0]]], dim=-1)[:, None]
    x1, y1, x2, y2 = l1.unbind(-1)
    x3, y3, x4, y4 = l2.unbind(-1)
    num = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
    den_t = (x1 - x3) * (y3 - y4) - (y1 - y3) * (x3 - x4)
    with torch.no_grad():
        den_u = (x1 - x2) * (y1 - y3) - (y1 - y2) * (x1 - x3)
        zero = num == 0
        t = torch.where(zero, torch.full_like(num, -1.0), den_t / num)
        u = torch.where(zero, torch.full_like(num, -1.0), -den_u / num)
        mask = (t > 0) & (t < 1) & (u > 0) & (u < 1)
    t = den_t / (num + _EPS)
    pts = torch.stack([x1 + t * (x2 - x1), y1 + t * (y2 - y1)], dim=-1) * mask.to(num.dtype)[..., None]
    n = c1.shape[0]
    return pts.reshape(n, 16, 2), mask.reshape(n, 16)


@torch.no_grad()
def _corners_in(c1: Tensor, c2: Tensor) -> Tensor:
    """(N, 4) corners of box 1 inside box 2, boundary included with mmcv's 1e-6 slack."""
    a, b, d = c2[:, 0:1], c2[:, 1:2], c2[:, 3:4]
    ab, am, ad = b - a, c1 - a, d - a
    p_ab, n_ab = (ab * am).sum(-1), (ab * ab).sum(-1)
    p_ad, n_ad = (ad * am).sum(-1), (ad * ad).sum(-1)
    r_ab, r_ad = p_ab / n_ab, p_ad / n_ad
    return (r_ab > -1e-6) & (r_ab < 1 + 1e-6) & (r_ad > -1e-6) & (r_ad < 1 + 1e-6)


def _vertex_less(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> Tensor:
    """mmcv kernel `compare_vertices` (float32 arithmetic, double EPSILON comparisons): angular
    order around the origin starting at +x; y == 0 exactly is never "less" than anything."""
    dt = x1.dtype
    eq = ((x1 - x2).abs().double() < _EPS) & ((y2 - y1).abs().double() < _EPS)
    n1 = ((x1 * x1 + y1 * y1).double() + _EPS).to(dt)
    n2 = ((x2 * x2 + y2 * y2).double() + _EPS).to(dt)
    diff = (x1.abs() * x1 / n1 - x2.abs() * x2 / n2).double()
    up1, up2, lo1, lo2 = y1 > 0, y2 > 0, y1 < 0, y2 < 0
    res = (up1 & lo2) | (~(lo1 & up2) & ((up1 & up2 & (diff > _EPS)) | (lo1 & lo2 & (diff < _EPS))))
    return ~eq & res


@torch.no_grad()
def _sort_vertices(verts: Tensor, mask: Tensor, num_valid: Tensor) -> Tensor:
    """Port of mmcv's `diff_iou_rotated_sort_vertices_forward` CUDA kernel: (N, 24, 2) normalised
    vertices -> (N, W) indices (W = 9, or num_valid + 1 where num_valid > 8, which is undefined
    behaviour in the kernel): a selection sort that scans the valid vertices in index order for
    the smallest one above the previous pick (index 0 when none is), then the first index
    repeated, then `pad` (the first invalid edge intersection, a zero vertex). Rows with fewer
    than 3 valid vertices are all `pad`; the kernel's fix-up for two identical boxes applies."""
    n, m = mask.shape
    dev = verts.device
    pad = (~mask[:, 8:]).to(torch.uint8).argmax(1) + 8
    max_nv = int(num_valid.max()) if n else 0
    width = max(9, max_nv + 1)
    idx = pad[:, None].repeat(1, width)
    if n == 0 or max_nv < 3:
        return idx
    # candidates: 0 = the kernel's initial "big" value (1, -EPS), 1 = vertex 0, 2.. = valid ones
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True)[1][:, :max_nv]
    valid = torch.arange(max_nv, device=dev)[None] < num_valid[:, None]
    src = torch.cat([torch.zeros_like(order[:, :2]), order], 1)
    cx = torch.cat([torch.ones_like(verts[:, :1, 0]), verts[:, :1, 0], verts[..., 0].gather(1, order)], 1)
    cy = torch.cat([torch.full_like(verts[:, :1, 1], -_EPS), verts[:, :1, 1], verts[..., 1].gather(1, order)], 1)
    less = _vertex_less(cx[:, :, None], cy[:, :, None], cx[:, None, :], cy[:, None, :])  # [a, b]: a < b
    rows = torch.arange(n, device=dev)
    picks = []
    prev = None
    for j in range(max_nv):
        elig = valid if prev is None else valid & less[rows, prev][:, 2:]
        cur = torch.zeros(n, dtype=torch.long, device=dev)
        for k in range(max_nv):
            take = elig[:, k] & less[rows, k + 2, cur]
            cur = torch.where(take, torch.full_like(cur, k + 2), cur)
        cur = torch.where(cur == 0, torch.ones_like(cur), cur)  # nothing found -> vertex 0
        picks.append(cur)
        prev = cur
    sorted_idx = src.gather(1, torch.stack(picks, 1))  # (n, max_nv) original indices
    col = torch.arange(width, device=dev)[None]
    nv = num_valid[:, None].long()
    body = torch.cat([sorted_idx, sorted_idx.new_zeros(n, width - max_nv)], 1)
    first = sorted_idx[:, :1].expand(-1, width)
    out = torch.where(col < nv, body, torch.where(col == nv, first, pad[:, None].expand(-1, width)))
    # identical boxes: the 4 corners of each box are all "valid" and pair up -> keep one copy
    if width >= 9:
        same = (out[:, :4, None] == out[:, None, 4:8]).sum((1, 2)) == 4
        fix = same & (num_valid == 8)
        fixed = torch.cat([out[:, :4], out[:, :1], pad[:, None].expand(-1, width - 5)], 1)
        out = torch.where(fix[:, None], fixed, out)
    return torch.where((num_valid >= 3)[:, None], out, idx)


def diff_iou_rotated(box1: Tensor, box2: Tensor) -> Tensor:
    """Differentiable IoU of aligned (N, 5) rotated boxes, as mmcv `diff_iou_rotated_2d`
    (the RotatedIoULoss): polygon = corners inside the other box + edge crossings, sorted by the
    kernel's angular rule, shoelace area; union = w1*h1 + w2*h2 - inter. Pure torch, so it runs
    on CPU and CUDA; gradients flow through the vertex coordinates (the sort is constant)."""
    c1, c2 = _box2corners(box1), _box2corners(box2)
    inters, imask = _edge_intersections(c1, c2)
    verts = torch.cat([c1, c2, inters], dim=1)
    mask = torch.cat([_corners_in(c1, c2), _corners_in(c2, c1), imask], dim=1)
    num_valid = mask.sum(1).int()
    with torch.no_grad():
        mean = (verts * mask[..., None].to(verts.dtype)).sum(1, keepdim=True) / num_valid[:, None, None]
        idx = _sort_vertices(verts - mean, mask, num_valid)
    sel = verts.gather(1, idx[..., None].expand(-1, -1, 2))
    total = (sel[:, :-1, 0] * sel[:, 1:, 1] - sel[:, :-1, 1] * sel[:, 1:, 0]).sum(1)
    inter = total.abs() / 2
    area1, area2 = box1[:, 2] * box1[:, 3], box2[:, 2] * box2[:, 3]
    return inter / (area1 + area2 - inter)


__all__ = [
    "obb2poly", "regularize_le90", "norm_angle_le90", "distance2obb", "obb2distance", "rescale_rotated",
    "points_in_rotated_boxes", "box_iou_rotated", "rbbox_overlaps", "nms_rotated", "batched_nms_rotated",
    "diff_iou_rotated", "MIN_AREA", "SPLIT_THR",
]
