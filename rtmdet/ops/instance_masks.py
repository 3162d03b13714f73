"""RTMDet-Ins mask math, written once for the model, the loss and exported graphs: the sizes of
the per-instance dynamic 1x1 convs, the convs themselves (as matmuls, so they trace to ONNX with
dynamic shapes), and the reference's mask finishing (upsample, crop, threshold)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .bilinear import AxisTable, axis_table, index_spans, lerp2
from .upload import upload

# the reference's mask_loss_stride: the loss reads gt masks at [2::4, 2::4] (the centres of
# 4-pixel cells), so training ships only those pixels
MASK_LOSS_STRIDE = 4
# instances whose masks are upsampled together (bounds the memory of large originals)
MASK_CHUNK = 16
# an instance whose window covers more than this share of the image is resized whole
# (F.interpolate costs less per pixel than the windowed gathers)
WINDOW_SHARE = 0.25
# padded window pixels computed together (bounds the memory of the windowed path)
WINDOW_BUDGET = 1 << 19


def dynamic_param_sizes(num_prototypes: int = 8, dyconv_channels: int = 8,
                        num_dyconvs: int = 3) -> tuple[list[int], list[int]]:
    """Weight and bias sizes of the per-instance dynamic 1x1 convs (first layer sees the
    prototypes plus 2 relative-coordinate channels; the last one outputs 1 channel)."""
    weights, biases = [], []
    for i in range(num_dyconvs):
        cin = num_prototypes + 2 if i == 0 else dyconv_channels
        cout = 1 if i == num_dyconvs - 1 else dyconv_channels
        weights.append(cin * cout)
        biases.append(cout)
    return weights, biases


def batched_dynamic_mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor,
                                priors: torch.Tensor, weight_nums: list[int],
                                bias_nums: list[int], dyconv_channels: int = 8,
                                feat_stride: int = 8) -> torch.Tensor:
    """Per instance: relative coordinates ((prior - cell point) / (prior stride * 8), x then y)
    stacked before the prototypes, then the instance's dynamic 1x1 convs (ReLU between); the
    flat kernel layout is all weights first, then all biases.

    mask_feat (B,P,h,w); kernels (B,K,params); priors (B,K,>=3: x, y, stride) -> (B,K,h,w)."""
    b, _, h, w = mask_feat.shape  # traced as sizes: dynamic in an export
    ys = torch.arange(h, device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    xs = torch.arange(w, device=mask_feat.device).to(mask_feat.dtype) * feat_stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coord = torch.stack([xx.reshape(-1), yy.reshape(-1)], 0)  # (2, hw), x then y
    norm = (priors[..., 2:3] * 8).unsqueeze(-1)  # (B,K,1,1)
    rel = (priors[..., :2].unsqueeze(-1) - coord) / norm  # (B,K,2,hw)
    feat = mask_feat.flatten(2)  # (B,P,hw)
    layers = len(weight_nums)
    offsets = [0]
    for n in list(weight_nums) + list(bias_nums):
        offsets.append(offsets[-1] + n)
    x = rel
    for i in range(layers):
        out = dyconv_channels if i < layers - 1 else 1
        wt = kernels[..., offsets[i]:offsets[i + 1]].unflatten(-1, (out, -1))  # (B,K,out,in)
        bias = kernels[..., offsets[layers + i]:offsets[layers + i + 1]].unsqueeze(-1)
        if i == 0:  # input channels: 2 relative coordinates, then the prototypes
            x = torch.matmul(wt[..., :2], rel) + torch.matmul(wt[..., 2:], feat.unsqueeze(1)) + bias
        else:
            x = torch.matmul(wt, x) + bias
        if i < layers - 1:
            x = torch.relu(x)
    return x.squeeze(2).reshape(b, kernels.shape[1], h, w)


def dynamic_mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor, priors: torch.Tensor,
                        weight_nums: list[int], bias_nums: list[int], dyconv_channels: int = 8,
                        feat_stride: int = 8) -> torch.Tensor:
    """One image: mask_feat (P,h,w), kernels (n,params), priors (n,>=3) -> logits (n,h,w)."""
    return batched_dynamic_mask_logits(mask_feat[None], kernels[None], priors[None], weight_nums,
                                       bias_nums, dyconv_channels, feat_stride)[0]


def logits_to_masks(logits: torch.Tensor, ori_shape: tuple[int, int],
                    scale_factor: tuple[float, float], stride: int = 8,
                    mask_thr: float = 0.5) -> torch.Tensor:
    """Mask logits (n, h, w) at `stride` -> (n, ori_h, ori_w) bool masks, as the reference computes
    them: bilinear x`stride` to the (padded) input, bilinear to ceil(input size / scale factor)
    (note: the reference scales the height by 1/w_scale and the width by 1/h_scale), crop the
    top-left original size, sigmoid, threshold.

    Only the pixels that can pass the threshold are computed: a bilinear value is a convex
    combination of its source logits, so a pixel whose sources all lie below logit(mask_thr) is
    False. Each instance's window (the pixels whose sources include a cell above it) is computed
    with F.interpolate's own tables and arithmetic (`ops.bilinear`: equal to float rounding, so
    only a pixel within that rounding of the threshold can differ - as F.interpolate's own
    results do between thread counts); an instance whose window covers most of the image goes
    through F.interpolate whole. On a GPU every instance goes through F.interpolate whole: the
    window search costs it more than the resizes it saves (bench_masks.py on an H100: 100
    instances of a 1920x1080 image, 3.5 ms whole against 58 ms windowed)."""
    ori_h, ori_w = (int(v) for v in ori_shape[:2])
    n, h, w = logits.shape
    out = torch.zeros((n, ori_h, ori_w), dtype=torch.bool, device=logits.device)
    if n == 0 or mask_thr >= 1:  # a sigmoid never exceeds 1
        return out
    if logits.device.type != "cpu":  # a GPU resizes the whole canvas faster than it finds windows
        _resize_whole(out, logits, list(range(n)), scale_factor, stride, mask_thr)
        return out
    in_h, in_w = h * stride, w * stride
    out_size = _canvas_size(in_h, in_w, scale_factor)
    # the pixels the reference keeps: the top-left of its resized canvas
    rows = axis_table(in_h, out_size[0], device=logits.device).take(slice(ori_h))
    cols = axis_table(in_w, out_size[1], device=logits.device).take(slice(ori_w))
    rows1 = axis_table(h, in_h, stride, logits.device)
    cols1 = axis_table(w, in_w, stride, logits.device)
    ys, ye, xs, xe = _support_windows(logits, mask_thr, rows1, rows, cols1, cols)
    heights, widths = (ye - ys + 1).tolist(), (xe - xs + 1).tolist()
    area = [a * b for a, b in zip(heights, widths)]
    full_px = len(rows.i0) * len(cols.i0)
    windowed = [i for i in range(n) if 0 < area[i] <= WINDOW_SHARE * full_px]
    whole = [i for i in range(n) if area[i] > WINDOW_SHARE * full_px]
    _resize_whole(out, logits, whole, scale_factor, stride, mask_thr)
    windowed.sort(key=lambda i: -area[i])
    for idx in _window_batches(windowed, heights, widths):
        sel = upload(idx, device=logits.device)
        _finish_windows(out, logits, sel, ys[sel], ye[sel], xs[sel], xe[sel], rows1, cols1,
                        rows, cols, mask_thr)
    return out


def whole_canvas_masks(logits: torch.Tensor, ori_shape: tuple[int, int],
                       scale_factor: tuple[float, float], stride: int = 8,
                       mask_thr: float = 0.5) -> torch.Tensor:
    """`logits_to_masks` the reference's way: every instance resized over the whole canvas.
    The benchmark's baseline."""
    ori_h, ori_w = (int(v) for v in ori_shape[:2])
    out = torch.zeros((len(logits), ori_h, ori_w), dtype=torch.bool, device=logits.device)
    _resize_whole(out, logits, list(range(len(logits))), scale_factor, stride, mask_thr)
    return out


def _resize_whole(out, logits, idx: list[int], scale_factor, stride, mask_thr) -> None:
    """out[idx] = masks of logits[idx], resized over the whole canvas `MASK_CHUNK` at a time."""
    out_size = _canvas_size(logits.shape[1] * stride, logits.shape[2] * stride, scale_factor)
    for start in range(0, len(idx), MASK_CHUNK):
        chunk = idx[start:start + MASK_CHUNK]
        x = F.interpolate(logits[chunk].unsqueeze(0), scale_factor=stride, mode="bilinear",
                          align_corners=False)
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
        x = x[0, :, :out.shape[1], :out.shape[2]].sigmoid() > mask_thr
        if chunk == list(range(chunk[0], chunk[-1] + 1)):  # a slice: no gather / scatter copy
            out[chunk[0]:chunk[-1] + 1, :x.shape[1], :x.shape[2]] = x
        else:
            out[chunk, :x.shape[1], :x.shape[2]] = x


def _canvas_size(in_h: int, in_w: int, scale_factor) -> list[int]:
    """The reference's resized canvas: the input times the inverse scale factors, rounded up."""
    inv = [1 / s for s in scale_factor]
    return [math.ceil(in_h * inv[0]), math.ceil(in_w * inv[1])]


def _window_batches(order: list[int], heights: list[int], widths: list[int]) -> list[list[int]]:
    """Instances (largest window first) grouped so a group's windows, padded to its tallest and
    widest, stay within WINDOW_BUDGET pixels."""
    groups, cur, top, wide = [], [], 0, 0
    for i in order:
        h, w = max(top, heights[i]), max(wide, widths[i])
        if cur and (len(cur) + 1) * h * w > WINDOW_BUDGET:
            groups.append(cur)
            cur, h, w = [], heights[i], widths[i]
        cur.append(i)
        top, wide = h, w
    return groups + ([cur] if cur else [])


def _support_windows(logits, mask_thr, rows1, rows2, cols1, cols2):
    """Per instance, the inclusive output rows ys..ye and cols xs..xe whose bilinear sources
    (through both resizes) include a logit cell that may pass `mask_thr`; empty (ys > ye) when
    none does. The margin covers the rounding of a convex combination."""
    n, h, w = logits.shape
    thr = -math.inf if mask_thr <= 0 else math.log(mask_thr) - math.log1p(-mask_thr)
    margin = 1e-3 + 1e-5 * float(logits.abs().amax().nan_to_num(0, 0, 0))
    active = logits > thr - margin

    def span(any_: torch.Tensor, t1: AxisTable, t2: AxisTable, size: int):
        first = any_.float().argmax(1)
        last = size - 1 - any_.flip(1).float().argmax(1)
        lo = t1.i0[t2.i0].contiguous()  # lowest / highest logit cell each output index reads
        hi = t1.i1[t2.i1].contiguous()
        start = torch.searchsorted(hi, first)
        end = torch.searchsorted(lo, last, right=True) - 1
        none = ~any_.any(1)
        return (torch.where(none, torch.ones_like(start), start),
                torch.where(none, torch.zeros_like(end), end))

    ys, ye = span(active.any(2), rows1, rows2, h)
    xs, xe = span(active.any(1), cols1, cols2, w)
    empty = (ys > ye) | (xs > xe)
    ye = torch.where(empty, ys - 1, ye)
    xe = torch.where(empty, xs - 1, xe)
    return ys, ye, xs, xe


def _finish_windows(out, logits, sel, ys, ye, xs, xe, rows1, cols1, rows2, cols2, mask_thr):
    """Masks of the instances `sel` inside their windows, written into `out`. Windows are padded
    to the group's largest by repeating their last row / column."""
    yy, xx = index_spans(ys, ye), index_spans(xs, xe)
    r2, c2 = rows2.take(yy), cols2.take(xx)
    # the rows / cols of the x`stride` canvas those pixels read, then their values
    rs, cs = r2.i0[:, 0], c2.i0[:, 0]
    rr, cc = index_spans(rs, r2.i1[:, -1]), index_spans(cs, c2.i1[:, -1])
    canvas = lerp2(logits[sel], rows1.take(rr), cols1.take(cc))
    local_r = AxisTable(r2.i0 - rs[:, None], r2.i1 - rs[:, None], r2.w0, r2.w1)
    local_c = AxisTable(c2.i0 - cs[:, None], c2.i1 - cs[:, None], c2.w0, c2.w1)
    masks = lerp2(canvas, local_r, local_c).sigmoid() > mask_thr
    for j, (i, y0, y1, x0, x1) in enumerate(zip(sel.tolist(), ys.tolist(), ye.tolist(),
                                                 xs.tolist(), xe.tolist())):
        out[i, y0:y1 + 1, x0:x1 + 1] = masks[j, :y1 - y0 + 1, :x1 - x0 + 1]
