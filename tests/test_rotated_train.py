"""RTMDet-R training: the loss against the mmrotate 1.x fixture (shared/fixtures/
rotated_rtmdet_tiny-3x-dota/loss.pth, see its README), the rotated assigner, the rotated-box
training target and pipeline, and the family's loss on a loader batch."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.families import get_family
from rtmdet.ops.boxes import grid_priors
from rtmdet.ops.rotated import distance2obb, regularize_le90
from rtmdet.train.assigner import ROTATED, DynamicSoftLabelAssigner
from rtmdet.train.losses import pad_gts
from rtmdet.train.losses_rotated import RotatedIoULoss, rotated_rtmdet_loss

from helpers import FIXTURES, load_fixture

ROT_FIX = FIXTURES / "rotated_rtmdet_tiny-3x-dota"


# ---------------------------------------------------------------------------- loss parity

@pytest.fixture(scope="module")
def parity():
    ref = load_fixture(ROT_FIX / "loss.pth")
    weights = load_fixture(ROT_FIX / "weights.pth")
    torch.manual_seed(0)
    model = rtmdet.create("rtmdet-r-tiny")
    model.load_state_dict(weights["state_dict"], strict=True)
    model.train()  # BN uses batch statistics
    out = model(ref["inputs"].float())
    losses = rotated_rtmdet_loss(out, [g["bboxes"] for g in ref["gt"]],
                                 [g["labels"] for g in ref["gt"]], ref["img_shape"])
    total = sum(losses["loss_cls"]) + sum(losses["loss_bbox"])
    total.backward()
    return ref, model, losses, total


def test_losses_per_level_and_total(parity):
    """README: losses rtol 1e-4 (observed: 1.6e-7 per level, 1.8e-7 total)."""
    ref, _, losses, total = parity
    for key in ("loss_cls", "loss_bbox"):
        assert len(losses[key]) == len(ref["losses"][key]) == 3
        for mine, theirs in zip(losses[key], ref["losses"][key]):
            torch.testing.assert_close(mine.detach(), theirs, rtol=1e-4, atol=0)
    torch.testing.assert_close(total.detach(), ref["total"], rtol=1e-4, atol=0)


def test_assignment_of_every_prior(parity):
    """gt index and label of every prior exact; the positives' IoUs and the decoded predictions
    the assigner saw equal (observed: bit for bit); background -1e8 exactly."""
    ref, _, losses, _ = parity
    res = losses["assign"]
    for i, r in enumerate(ref["assigned"]):
        assert torch.equal(res.gt_inds[i], r["gt_inds"])
        assert torch.equal(res.labels[i], r["labels"])
        pos = r["gt_inds"] > 0
        assert int(pos.sum()) > 0
        torch.testing.assert_close(res.max_overlaps[i][pos], r["max_overlaps"][pos], rtol=1e-6, atol=1e-6)
        assert torch.equal(res.max_overlaps[i][~pos], r["max_overlaps"][~pos])
        torch.testing.assert_close(losses["pred_boxes"][i], r["pred_bboxes"], rtol=1e-5, atol=1e-4)
    # README: positives per level (img 0; img 1) = 9,3,2; 0,4,0
    counts = [[int((r["gt_inds"][s:s + n] > 0).sum()) for s, n in ((0, 1600), (1600, 400), (2000, 100))]
              for r in ref["assigned"]]
    assert counts == [[9, 3, 2], [0, 4, 0]]


def test_gradients(parity):
    """Stem and every rtm_{cls,reg,ang}: within 1e-3 of each tensor's largest |reference
    gradient| (observed worst: 1.1e-5)."""
    ref, model, _, _ = parity
    params = dict(model.named_parameters())
    names = {f"bbox_head.rtm_{b}.{lv}.{t}" for b in ("cls", "reg", "ang") for lv in range(3)
             for t in ("weight", "bias")} | {"backbone.stem.0.conv.weight"}
    assert set(ref["grads"]) == names
    for name, g in ref["grads"].items():
        mine = params[name].grad
        assert mine is not None, name
        torch.testing.assert_close(mine, g, rtol=0, atol=1e-3 * float(g.abs().max()), msg=name)


def test_family_loss_on_the_fixture(parity):
    """`RotatedFamily.loss` (what the trainer calls) gives the same two parts."""
    ref, model, _, _ = parity
    fam = get_family("rotated")
    assert fam.loss_keys == ("loss_cls", "loss_bbox") and fam.targets == ("rboxes",)
    with torch.no_grad():
        out = model(ref["inputs"].float())
    batch = {"rboxes": [g["bboxes"] for g in ref["gt"]], "labels": [g["labels"] for g in ref["gt"]]}
    parts = fam.loss(out, batch, (320, 320), model.cfg, torch.device("cpu"))
    assert set(parts) == {"loss_cls", "loss_bbox"}
    torch.testing.assert_close(parts["loss_cls"] + parts["loss_bbox"], ref["total"], rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="rotated boxes"):
        fam.loss(out, {"boxes": batch["rboxes"], "labels": batch["labels"]}, (320, 320), model.cfg,
                 torch.device("cpu"))


# ---------------------------------------------------------------------------- the assigner

def _random_rotated_case(seed, B=3, C=5, size=(96, 128)):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    sizes = [(h // s, w // s) for s in (8, 16, 32)]
    priors = torch.cat(grid_priors(sizes, (8, 16, 32), with_stride=True))
    N = len(priors)
    scores = torch.randn(B, N, C, generator=g) * 2
    dist = torch.cat([torch.rand(B, N, 4, generator=g) * 40 + 2, torch.randn(B, N, 1, generator=g)], -1)
    boxes = distance2obb(priors[None, :, :2], dist)
    gts, labels = [], []
    for b in range(B):
        n = [4, 0, 7][b % 3]
        ctr = torch.rand(n, 2, generator=g) * torch.tensor([w - 20.0, h - 20.0]) + 10
        wh = torch.rand(n, 2, generator=g) * 60 + 4
        t = (torch.rand(n, 1, generator=g) - 0.5) * 4  # not regularised, as the fixture's
        gts.append(torch.cat([ctr, wh, t], 1))
        labels.append(torch.randint(0, C, (n,), generator=g))
    gts[0][1] = gts[0][0]  # a duplicated box forces priors wanted by two gts
    return scores, boxes, priors, gts, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_rotated_assigner_equals_per_image(seed):
    scores, boxes, priors, gts, labels = _random_rotated_case(seed)
    asg = DynamicSoftLabelAssigner(boxes=ROTATED)
    gb, gl, gv = pad_gts(gts, labels, dim=5)
    batched = asg.assign(scores, boxes, priors, gb, gl, gv)
    assert batched.pos_mask.any()
    for i in range(len(gts)):
        single = asg.assign(scores[i:i + 1], boxes[i:i + 1], priors, gts[i][None], labels[i][None])
        assert torch.equal(batched.gt_inds[i], single.gt_inds[0])
        assert torch.equal(batched.labels[i], single.labels[0])
        assert torch.equal(batched.max_overlaps[i], single.max_overlaps[0])
    assert (batched.gt_inds[1] == 0).all() and (batched.max_overlaps[1] == 0).all()


def test_rotated_assignment_does_not_depend_on_the_gt_representation():
    """The same rectangles written as (h, w, theta + pi/2) or theta + pi: same positives."""
    scores, boxes, priors, gts, labels = _random_rotated_case(3)
    asg = DynamicSoftLabelAssigner(boxes=ROTATED)
    a = asg.assign(scores, boxes, priors, *pad_gts(gts, labels, dim=5))
    other = [torch.stack([g[:, 0], g[:, 1], g[:, 3], g[:, 2], g[:, 4] + math.pi / 2 + math.pi], 1) for g in gts]
    b = asg.assign(scores, boxes, priors, *pad_gts(other, labels, dim=5))
    assert torch.equal(a.gt_inds, b.gt_inds)
    torch.testing.assert_close(a.max_overlaps, b.max_overlaps, atol=1e-5, rtol=0)


def test_no_gt_batch_gives_finite_zero_bbox_loss():
    model = rtmdet.create("rtmdet-r-tiny", num_classes=3).train()
    out = model(torch.randn(2, 3, 64, 64))
    ld = rotated_rtmdet_loss(out, [torch.zeros(0, 5)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    t = sum(ld["loss_cls"]) + sum(ld["loss_bbox"])
    assert torch.isfinite(t) and float(sum(ld["loss_bbox"]).detach()) == 0.0
    t.backward()


def test_rotated_iou_loss_modes_and_zero_weights():
    a = torch.tensor([[10.0, 10, 8, 4, 0.3], [0, 0, 5, 5, 0]], requires_grad=True)
    b = regularize_le90(torch.tensor([[10.0, 11, 4, 8, 0.3 + math.pi / 2], [0, 0, 5, 5, 0]]))
    w = torch.tensor([0.5, 1.0])
    lin = RotatedIoULoss("linear", 2.0)(a, b, w, avg_factor=1.0)
    from rtmdet.ops.rotated import box_iou_rotated
    iou = box_iou_rotated(a.detach(), b, aligned=True)
    torch.testing.assert_close(lin, 2.0 * ((1 - iou) * w).sum() / (1 + torch.finfo(torch.float32).eps),
                               rtol=1e-5, atol=1e-6)
    log = RotatedIoULoss("log", 1.0)(a, b)
    torch.testing.assert_close(log, -iou.clamp(min=1e-6).log().mean(), rtol=1e-5, atol=1e-6)
    zero = RotatedIoULoss()(a, b, torch.zeros(2), avg_factor=1.0)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    with pytest.raises(ValueError):
        RotatedIoULoss("cube")
