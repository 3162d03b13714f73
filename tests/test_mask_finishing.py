"""Instance-mask finishing computed on windows (`ops.bilinear`, `ops.instance_masks`) against
the reference's whole-canvas computation (F.interpolate twice, crop, sigmoid, threshold)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import rtmdet.ops.instance_masks as im
from rtmdet.ops.bilinear import AxisTable, axis_table, lerp2

# F.interpolate's own CPU results move in the last bit with the thread count (its kernel splits
# and vectorises the work differently); `lerp2` follows its arithmetic (the 2-thread results here
# bit for bit), so values agree to float rounding and masks may differ only at pixels whose
# logit is within that rounding of the threshold.
ROUNDING = 1e-4


def reference_masks(logits, ori_shape, scale_factor, stride=8, mask_thr=0.5):
    """The reference's order of operations on the whole canvas (the oracle); also its logits."""
    ori_h, ori_w = ori_shape
    x = F.interpolate(logits.unsqueeze(0), scale_factor=stride, mode="bilinear",
                      align_corners=False)
    size = [math.ceil(x.shape[-2] * (1 / scale_factor[0])),
            math.ceil(x.shape[-1] * (1 / scale_factor[1]))]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0, :, :ori_h, :ori_w]
    return x.sigmoid() > mask_thr, x


def assert_same_masks(ours, ref, ref_logits, mask_thr):
    assert ours.shape == ref.shape and ours.dtype == torch.bool
    thr = math.log(mask_thr) - math.log1p(-mask_thr)
    differ = ours != ref
    assert ((ref_logits[differ] - thr).abs() < ROUNDING).all(), int(differ.sum())
    assert int(differ.sum()) <= max(2, ref.numel() // 100000)


def blobs(n, h=80, w=80, seed=0, noise=0.3):
    """Logits of `n` round instances (positive inside a radius, falling off outside) plus noise:
    what a trained model's mask logits look like."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * torch.tensor([h, w])
    radius = torch.rand(n, generator=g) * 12 + 1
    dist = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2).sqrt()
    return radius[:, None, None] - dist + noise * torch.randn(n, h, w, generator=g)


@pytest.mark.parametrize("in_size,out_size,scale", [(80, 640, 8), (37, 296, 8), (640, 1920, None),
                                                    (640, 500, None), (640, 427, None),
                                                    (10, 7, None), (1, 5, None), (4, 32, 8)])
def test_lerp2_equals_interpolate(in_size, out_size, scale):
    g = torch.Generator().manual_seed(in_size * 7 + out_size)
    x = torch.randn(3, in_size, in_size + 3, generator=g) * 20
    ref = F.interpolate(x[None], size=None if scale else [out_size, out_size + 5],
                        scale_factor=scale, mode="bilinear", align_corners=False)[0]
    rows = axis_table(in_size, ref.shape[1], scale)
    cols = axis_table(in_size + 3, ref.shape[2], scale)
    # every output pixel, then a window of rows / cols per instance
    full = lerp2(x, AxisTable(*(t.expand(3, -1) for t in rows)),
                 AxisTable(*(t.expand(3, -1) for t in cols)))
    ys = torch.tensor([0, ref.shape[1] // 3, ref.shape[1] - 1])
    xs = torch.tensor([ref.shape[2] // 2, 0, ref.shape[2] // 4])
    span_y = torch.arange(max(1, ref.shape[1] // 2))
    span_x = torch.arange(max(1, ref.shape[2] // 3))
    yy = (ys[:, None] + span_y).clamp(max=ref.shape[1] - 1)
    xx = (xs[:, None] + span_x).clamp(max=ref.shape[2] - 1)
    part = lerp2(x, rows.take(yy), cols.take(xx))
    expect = ref[torch.arange(3)[:, None, None], yy[:, :, None], xx[:, None, :]]
    torch.testing.assert_close(full, ref, atol=ROUNDING, rtol=1e-5)
    torch.testing.assert_close(part, expect, atol=ROUNDING, rtol=1e-5)


CASES = [((1080, 1920), (1 / 3, 1 / 3)), ((480, 640), (1.0, 1.0)), ((640, 427), (1.0, 427 / 640)),
         ((300, 500), (1.28, 1.28)), ((33, 41), (15.61, 15.61))]


@pytest.mark.parametrize("ori,scale", CASES)
@pytest.mark.parametrize("share", [None, 0.0, 1.01])
def test_windowed_masks_equal_reference(monkeypatch, ori, scale, share):
    """Default split, everything through F.interpolate, everything windowed: the same masks."""
    if share is not None:
        monkeypatch.setattr(im, "WINDOW_SHARE", share)
    logits = blobs(24, seed=len(ori) + ori[0])
    ref, ref_logits = reference_masks(logits, ori, scale)
    assert ref.any() and not ref.all()  # the case has masks with edges to get right
    assert_same_masks(im.logits_to_masks(logits, ori, scale), ref, ref_logits, 0.5)


@pytest.mark.parametrize("mask_thr", [0.5, 0.05, 0.95, 1e-6])
def test_windowed_masks_any_threshold(monkeypatch, mask_thr):
    """Any threshold, many small groups."""
    monkeypatch.setattr(im, "WINDOW_BUDGET", 5000)
    monkeypatch.setattr(im, "WINDOW_SHARE", 1.01)
    logits = blobs(16, seed=3) - 4 * (0.5 - mask_thr)
    ref, ref_logits = reference_masks(logits, (480, 640), (1.0, 1.0), mask_thr=mask_thr)
    ours = im.logits_to_masks(logits, (480, 640), (1.0, 1.0), mask_thr=mask_thr)
    assert_same_masks(ours, ref, ref_logits, mask_thr)


def test_edge_thresholds_and_instances():
    """Threshold 0 and 1, an instance far below the threshold, one above it only in the padding
    the crop removes, one positive everywhere, a square, a corner: as the reference."""
    logits = torch.full((5, 80, 80), -30.0)
    logits[1, 70:, 70:] = 5.0  # input 640x640, original 320x320: only the cropped-away part
    logits[2] = 3.0
    logits[3, 10:20, 10:20] = 4.0
    logits[4, 0, 0] = 1.0  # a corner instance
    ori, scale = (320, 320), (1.0, 1.0)
    for thr in (0.0, 1.0, 0.5):
        ref, ref_logits = reference_masks(logits, ori, scale, mask_thr=thr)
        ours = im.logits_to_masks(logits, ori, scale, mask_thr=thr)
        if thr == 0.5:
            assert not ours[0].any() and not ours[1].any() and ours[2].all() and ours[3].any()
        assert torch.equal(ours, ref)  # no logit near these thresholds


def test_no_instances_and_windows_are_tight():
    assert im.logits_to_masks(torch.zeros(0, 80, 80), (100, 120), (1, 1)).shape == (0, 100, 120)
    logits = torch.full((1, 80, 80), -20.0)
    logits[0, 40, 40] = 20.0  # one cell: a window of a few output pixels around it
    rows1, cols1 = axis_table(80, 640, 8), axis_table(80, 640, 8)
    rows2, cols2 = axis_table(640, 640), axis_table(640, 640)
    ys, ye, xs, xe = im._support_windows(logits, 0.5, rows1, rows2, cols1, cols2)
    assert 300 < int(ys) <= 320 < 327 <= int(ye) < 345 and (int(xs), int(xe)) == (int(ys), int(ye))
    ref, _ = reference_masks(logits, (640, 640), (1, 1))
    rows_any = ref[0].any(1).nonzero()
    assert int(ys) <= int(rows_any.min()) and int(rows_any.max()) <= int(ye)


def test_gpus_resize_the_whole_canvas():
    """Off the CPU no window is searched (that needs the logits' values on the host): on the meta
    device, which has no values, only the whole-canvas path can run."""
    logits = torch.empty((3, 80, 80), device="meta")
    out = im.logits_to_masks(logits, (480, 640), (1.0, 1.0))
    assert out.device.type == "meta" and out.shape == (3, 480, 640) and out.dtype == torch.bool


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_are_the_reference_computation():
    logits = blobs(24, seed=5)
    for ori, scale in CASES:
        ours = im.logits_to_masks(logits.cuda(), ori, scale)
        ref, _ = reference_masks(logits.cuda(), ori, scale)
        assert torch.equal(ours, ref)
        cpu, cpu_logits = reference_masks(logits, ori, scale)
        assert_same_masks(ours.cpu(), cpu, cpu_logits, 0.5)
