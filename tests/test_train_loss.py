"""Training loss parity with the reference (mmdet 3.3.0 RTMDetHead.loss_by_feat) and the batched
dynamic soft-label assigner."""
from __future__ import annotations

import pytest
import torch

import rtmdet
from rtmdet.ops.boxes import grid_priors
from rtmdet.train.assigner import DynamicSoftLabelAssigner
from rtmdet.train.losses import pad_gts, rtmdet_loss, total_loss
from helpers import DET_FIX, assert_assignment_equal, assert_level_losses_close, load_fixture, need


@pytest.fixture(scope="module")
def parity():
    ref = load_fixture(DET_FIX / "loss.pth")
    torch.manual_seed(0)
    model = rtmdet.load(need(DET_FIX / "weights.pth")).train()  # BN uses batch statistics
    out = model(ref["inputs"])
    losses = rtmdet_loss(out, [g["bboxes"] for g in ref["gt"]], [g["labels"] for g in ref["gt"]],
                         ref["img_shape"])
    total = total_loss(losses)
    total.backward()
    return ref, model, losses, total


def test_losses_per_level_and_total(parity):
    ref, _, losses, total = parity
    assert_level_losses_close(losses, ref["losses"])
    torch.testing.assert_close(total.detach(), ref["total"], rtol=1e-3, atol=0)


def test_assignment_of_every_prior(parity):
    ref, _, losses, _ = parity
    assert_assignment_equal(losses["assign"], ref["assigned"])


def test_gradients(parity):
    """rtol 1e-3; atol = 1e-4 x the largest |reference gradient| of the same tensor, for entries
    near zero (the reference itself moves ~1e-4 between thread counts). Observed worst case needs
    an atol of 2.2e-5 x max."""
    ref, model, _, _ = parity
    params = dict(model.named_parameters())
    assert len(ref["grads"]) == 13
    for name, g in ref["grads"].items():
        mine = params[name].grad
        assert mine is not None, name
        torch.testing.assert_close(mine, g, rtol=1e-3, atol=1e-4 * float(g.abs().max()), msg=name)


def _random_case(seed, B=3, C=5, size=(96, 128)):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    sizes = [(h // s, w // s) for s in (8, 16, 32)]
    priors = torch.cat(grid_priors(sizes, (8, 16, 32), with_stride=True))
    N = len(priors)
    scores = torch.randn(B, N, C, generator=g) * 2
    dist = torch.rand(B, N, 4, generator=g) * 40 + 2
    boxes = torch.cat([priors[None, :, :2] - dist[..., :2], priors[None, :, :2] + dist[..., 2:]], -1)
    gts, labels = [], []
    for b in range(B):
        n = [4, 0, 7][b % 3]
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 20.0, h - 20.0])
        wh = torch.rand(n, 2, generator=g) * 60 + 4
        gts.append(torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], 1))
        labels.append(torch.randint(0, C, (n,), generator=g))
    # a duplicated box forces priors wanted by two gts
    gts[0][1] = gts[0][0]
    return scores, boxes, priors, gts, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_assigner_equals_per_image(seed):
    scores, boxes, priors, gts, labels = _random_case(seed)
    asg = DynamicSoftLabelAssigner()
    gb, gl, gv = pad_gts(gts, labels)
    batched = asg.assign(scores, boxes, priors, gb, gl, gv)
    assert batched.pos_mask.any()
    for i in range(len(gts)):
        single = asg.assign(scores[i:i + 1], boxes[i:i + 1], priors, gts[i][None], labels[i][None])
        assert torch.equal(batched.gt_inds[i], single.gt_inds[0])
        assert torch.equal(batched.labels[i], single.labels[0])
        assert torch.equal(batched.max_overlaps[i], single.max_overlaps[0])
    # an image without gts is all background with max_overlaps 0 (reference behaviour)
    assert (batched.gt_inds[1] == 0).all() and (batched.labels[1] == -1).all()
    assert (batched.max_overlaps[1] == 0).all()


def test_a_prior_wanted_by_two_gts_goes_to_the_cheaper_one():
    """Gt A (the whole 64x64 image) listed before gt B (its centre quarter), 16 priors inside
    both (so each gt alone has the same candidates as the two together); every prediction is
    box B, so for any prior the IoU cost of B is 0 and of A -3 log(1/4), with the same centre
    term. Each gt alone picks its own top-k priors; with both, a prior in both picks goes to B
    (the first-listed A without the rule), the others to the gt that picked them."""
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    priors = torch.stack([20 + xs.flatten() * 8, 20 + ys.flatten() * 8,
                          torch.full((16,), 8.0), torch.full((16,), 8.0)], 1)
    a, b = torch.tensor([0.0, 0.0, 64.0, 64.0]), torch.tensor([16.0, 16.0, 48.0, 48.0])
    scores = torch.zeros(1, 16, 3)
    preds = b.expand(1, 16, 4).clone()
    asg = DynamicSoftLabelAssigner()
    alone = [asg.assign(scores, preds, priors, g.view(1, 1, 4), torch.zeros(1, 1, dtype=torch.long)).pos_mask[0]
             for g in (a, b)]
    both = asg.assign(scores, preds, priors, torch.stack([a, b])[None], torch.zeros(1, 2, dtype=torch.long))
    got, shared = both.gt_inds[0], alone[0] & alone[1]
    assert shared.any() and (alone[1] & ~shared).any() and not (alone[0] | alone[1]).all()
    assert (got[shared] == 2).all()
    assert (got[alone[0] & ~shared] == 1).all() and (got[alone[1] & ~shared] == 2).all()
    assert (got[~(alone[0] | alone[1])] == 0).all()


def test_no_gt_batch_gives_finite_zero_bbox_loss():
    model = rtmdet.create("rtmdet-tiny", num_classes=3).train()
    out = model(torch.randn(2, 3, 64, 64))
    losses = rtmdet_loss(out, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    t = total_loss(losses)
    assert torch.isfinite(t) and float(sum(losses["loss_bbox"]).detach()) == 0.0
    t.backward()


@pytest.mark.parametrize("seed", [0, 1])
def test_quality_focal_loss_soft_one_hot(seed):
    """QFL against its definition written per element: the target is the score at the positive
    rows' label and 0 everywhere else - background rows (label C or -1) contribute no target
    even when their score is not 0; gradients reach the logits and the scores."""
    from rtmdet.train.losses import quality_focal_loss
    g = torch.Generator().manual_seed(seed)
    n, c = 40, 7
    logits = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(-1, c + 1, (n,), generator=g)
    scores = torch.rand(n, generator=g, dtype=torch.float64, requires_grad=True)
    got = quality_focal_loss(logits, labels, scores)
    want = []
    for i in range(n):
        row = 0
        for k in range(c):
            t = scores[i] if k == int(labels[i]) else torch.zeros((), dtype=torch.float64)
            p = torch.sigmoid(logits[i, k])
            bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
            row = row + bce * (t - p).abs() ** 2
        want.append(row)
    want = torch.stack(want)
    assert ((labels < 0) | (labels >= c)).any() and ((labels >= 0) & (labels < c)).any()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    g1 = torch.autograd.grad(got.sum(), (logits, scores))
    g2 = torch.autograd.grad(want.sum(), (logits, scores))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
