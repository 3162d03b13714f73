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
    the assigner saw equal (observed with 1 thread: bit for bit); background -1e8 exactly."""
    ref, _, losses, _ = parity
    res = losses["assign"]
    for i, r in enumerate(ref["assigned"]):
        assert torch.equal(res.gt_inds[i], r["gt_inds"])
        assert torch.equal(res.labels[i], r["labels"])
        pos = r["gt_inds"] > 0
        assert int(pos.sum()) > 0
        torch.testing.assert_close(res.max_overlaps[i][pos], r["max_overlaps"][pos], rtol=1e-6, atol=1e-6)
        assert torch.equal(res.max_overlaps[i][~pos], r["max_overlaps"][~pos])
        # the network's own thread-count noise (README: 1.2e-5 of max) reaches 3e-4 px here
        torch.testing.assert_close(losses["pred_boxes"][i], r["pred_bboxes"], rtol=1e-4, atol=2e-3)
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


# ---------------------------------------------------------------------------- training data

import cv2  # noqa: E402

from rtmdet.data.datasets import load_dataset  # noqa: E402
from rtmdet.data.loader import TrainDataset, build_train_loader  # noqa: E402
from rtmdet.data.synthetic_rotated import make_rotated_shapes_splits, rbox_corners  # noqa: E402
from rtmdet.data.target_loaders import TARGET_LOADERS  # noqa: E402
from rtmdet.data.targets import RBoxTarget  # noqa: E402
from rtmdet.data.transforms import (Pad, RandomFlip, RandomRotate, Resize, Sample,  # noqa: E402
                                    build_train_pipeline, pipeline_params)
from rtmdet.ops.polygons import poly2obb_le90  # noqa: E402


def _render(rbox, h, w):
    """The box's pixels (pixel i spans [i, i + 1]: cv2 draws with pixel centres at integers)."""
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round((rbox_corners(*rbox) - 0.5) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return m.astype(bool)


def _one_box_sample(rng, h=90, w=130):
    """A white rotated rectangle on black, with its RBoxTarget and hull box."""
    box = (rng.uniform(40, w - 40), rng.uniform(35, h - 35), rng.uniform(20, 40), rng.uniform(10, 18),
           rng.uniform(-3, 3))
    img = np.repeat(_render(box, h, w)[..., None].astype(np.uint8) * 255, 3, 2)
    t = RBoxTarget(np.array([box], np.float32))
    return Sample(img, t.boxes(), [0], targets={"rboxes": t})


def _assert_follows_image(s):
    h, w = s.img.shape[:2]
    drawn = s.img[..., 0] > 127
    assert len(s.targets["rboxes"]) == len(s.boxes) == 1
    box = s.targets["rboxes"].data[0]
    mine = _render(box, h, w)
    iou = (drawn & mine).sum() / max((drawn | mine).sum(), 1)
    assert iou > 0.85, (iou, box)
    hull = s.targets["rboxes"].boxes()[0]
    np.testing.assert_allclose(s.boxes[0], [max(hull[0], 0), max(hull[1], 0), min(hull[2], w), min(hull[3], h)],
                               atol=0.05)  # a resize scales the hull, not quite the box's new hull


@pytest.mark.parametrize("op", ["resize", "flip_h", "flip_v", "flip_d", "rotate30", "rotate-90", "pad"])
def test_rbox_target_follows_the_image(op):
    """Every geometric step moves the rotated box exactly as the pixels move (mask IoU > 0.85)."""
    rng = np.random.default_rng(hash(op) % 1000)
    for _ in range(5):
        s = _one_box_sample(rng)
        if op == "resize":
            s = Resize((230, 170), keep_ratio=True)(s)
        elif op.startswith("flip"):
            s = RandomFlip.flip(s, {"h": "horizontal", "v": "vertical", "d": "diagonal"}[op[-1]])
        elif op.startswith("rotate"):
            s = RandomRotate.rotate(s, float(op[len("rotate"):]))
        else:
            s = Pad((160, 100))(s)
        _assert_follows_image(s)


def test_rbox_target_geometry_is_the_reference_formulas():
    t = RBoxTarget(np.array([[10, 20, 8, 4, 0.3], [50, 5, 6, 6, -1.2]], np.float32))
    f = t.flip(100, 60, "horizontal").data
    np.testing.assert_allclose(f[:, [0, 1, 4]], [[90, 20, -0.3], [50, 5, 1.2]], atol=1e-6)
    f = t.flip(100, 60, "vertical").data
    np.testing.assert_allclose(f[:, [0, 1, 4]], [[10, 40, -0.3], [50, 55, 1.2]], atol=1e-6)
    f = t.flip(100, 60, "diagonal").data
    np.testing.assert_allclose(f[:, [0, 1, 4]], [[90, 40, 0.3], [50, 55, -1.2]], atol=1e-6)
    r = t.rotate(90, 100, 60).data  # about (50, 30): (x, y) -> (80 - y, x - 20), theta + pi/2
    np.testing.assert_allclose(r[:, :2], [[60, -10], [75, 30]], atol=1e-4)
    np.testing.assert_allclose(r[:, 4], t.data[:, 4] + np.pi / 2, atol=1e-6)
    z = t.resize(2.0, 2.0, 200, 120).data  # isotropic: sizes scale, angle kept
    np.testing.assert_allclose(z, t.data * [2, 2, 2, 2, 1], atol=1e-5)
    assert len(RBoxTarget.concat([t, t.blank(2, 100, 60)])) == 4
    np.testing.assert_allclose(t.translate(-3, 4, 50, 50).data[:, :2], t.data[:, :2] + [-3, 4])


def test_random_flip_three_directions_and_rotate_draws():
    rng = np.random.default_rng(0)
    s = _one_box_sample(rng)
    flip = RandomFlip(0.75, ("horizontal", "vertical", "diagonal"))
    seen = [flip(s.copy(), rng).meta.get("flip_direction") for _ in range(800)]
    for d in ("horizontal", "vertical", "diagonal", None):
        assert 150 < seen.count(d) < 250, (d, seen.count(d))
    with pytest.raises(ValueError):
        RandomFlip(0.5, ("sideways",))
    rot = RandomRotate(prob=1.0, angle_range=180, rect_obj_labels=(3,))
    angles = [rot(s.copy(), rng).meta["rotate"] for _ in range(30)]
    assert all(-180 <= a < 180 for a in angles) and len(set(angles)) == 30
    s3 = Sample(s.img, s.boxes, [3], targets=s.targets)
    assert {rot(s3.copy(), rng).meta["rotate"] for _ in range(40)} == {90.0, 180.0, -90.0, -180.0}
    assert "rotate" not in RandomRotate(prob=0.0)(s.copy(), rng).meta


def test_rotate_drops_instances_whose_centre_leaves_the_image():
    h, w = 60, 200
    t = RBoxTarget(np.array([[10, 30, 12, 6, 0.0], [100, 30, 12, 6, 0.5]], np.float32))
    s = Sample(np.zeros((h, w, 3), np.uint8), t.boxes(), [0, 1], targets={"rboxes": t})
    out = RandomRotate.rotate(s, 90.0)  # (10, 30) -> (130 - 30, 10 - 70) is above the image
    assert out.labels.tolist() == [1] and len(out.targets["rboxes"]) == 1
    assert (out.boxes[:, [0, 2]] >= 0).all() and (out.boxes[:, [0, 2]] <= w).all()


def test_rotated_records_pipeline_is_the_mmrotate_one():
    p = pipeline_params("rtmdet-r-tiny")
    assert p.recipe == "rotated" and p.flip_prob == 0.75
    assert p.flip_directions == ("horizontal", "vertical", "diagonal")
    for stage in (1, 2):
        rep = repr(build_train_pipeline("rtmdet-r-s", stage, 1024))
        assert rep == ("Compose(Resize(scale=(1024, 1024), keep_ratio=True), RandomFlip(prob=0.75, "
                       "direction=['horizontal', 'vertical', 'diagonal']), RandomRotate(prob=0.5, "
                       "angle_range=180.0, rect_obj_labels=(9, 11)), Pad(size=(1024, 1024), pad_val=114))")
    # rect classes by name: none among other datasets' classes
    assert "rect_obj_labels=None" in repr(build_train_pipeline("r-tiny", 1, 256, ["bar", "ellipse"]))
    assert "rect_obj_labels=(0,)" in repr(build_train_pipeline("r-tiny", 1, 256, ["roundabout"]))
    assert rtmdet.presets.get_record("rtmdet-r-tiny").base_lr == (0.004 / 16, 8)


@pytest.fixture(scope="module")
def rot_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rot")
    make_rotated_shapes_splits(root / "dota", {"train": 6, "val": 3}, image_size=(96, 128))
    make_rotated_shapes_splits(root / "obb", {"train": 6, "val": 3}, image_size=(96, 128), fmt="yolo-obb")
    return root


def test_synthetic_rotated_dataset_both_formats(rot_data):
    for split, n in (("train", 6), ("val", 3)):
        dota = load_dataset(rot_data / "dota", split, strict=True)  # a DOTA folder needs no kind
        obb = load_dataset(rot_data / "obb", split, kind="rotated", strict=True)
        assert len(dota) == len(obb) == n
        assert dota.class_names == obb.class_names == ["rectangle", "ellipse", "bar"]
        for a, b in zip(dota.records, obb.records):
            assert len(a.labels) > 0 and a.labels.tolist() == b.labels.tolist()
            np.testing.assert_allclose(a.polygons, b.polygons, atol=2e-3)
            rb = poly2obb_le90(a.polygons)
            assert (rb[:, 2] >= rb[:, 3]).all() and (rb[:, 3] >= 5).all()
            inside = (a.polygons[:, 0::2] >= 0) & (a.polygons[:, 0::2] <= a.width) & \
                     (a.polygons[:, 1::2] >= 0) & (a.polygons[:, 1::2] <= a.height)
            assert inside.all()
    with pytest.raises(ValueError):
        load_dataset(rot_data / "dota", "train", kind="round")


def test_drawn_shapes_match_their_boxes(rot_data):
    """Each annotated box covers a region that differs from the background around it: the
    shape's pixels lie inside its box (the box of a rectangle is the rectangle itself)."""
    ds = load_dataset(rot_data / "dota", "train")
    rec = ds.records[0]
    img = cv2.imread(ds.image_path(rec))
    for rb in poly2obb_le90(rec.polygons):
        inner = _render((rb[0], rb[1], rb[2] * 0.5, rb[3] * 0.5, rb[4]), *img.shape[:2])
        ring = _render((rb[0], rb[1], rb[2] + 8, rb[3] + 8, rb[4]), *img.shape[:2]) & \
            ~_render((rb[0], rb[1], rb[2] + 2, rb[3] + 2, rb[4]), *img.shape[:2])
        inner_px = img[inner].astype(float)
        assert inner_px.std(0).max() < 40  # a flat fill (plus an outline for rectangles)
        assert np.abs(inner_px.mean(0) - img[ring].astype(float).mean(0)).max() > 5


def test_train_batch_carries_rboxes_and_the_family_loss_runs(rot_data):
    assert "rboxes" in TARGET_LOADERS
    ds = load_dataset(rot_data / "dota", "train", kind="rotated")
    fam = get_family("rotated")
    tds = TrainDataset(ds, model_size="rtmdet-r-tiny", img_scale=128, targets=fam.targets, seed=3)
    batch = next(iter(build_train_loader(tds, 3)))
    assert batch["imgs"].shape == (3, 3, 128, 128)
    for rb, lab, box in zip(batch["rboxes"], batch["labels"], batch["boxes"]):
        assert rb.shape == (len(lab), 5) and box.shape == (len(lab), 4) and rb.dtype == torch.float32
    model = rtmdet.create("rtmdet-r-tiny", num_classes=3).train()
    parts = fam.loss(model(model.normalize(batch["imgs"])), batch, (128, 128), model.cfg, torch.device("cpu"))
    total = sum(parts.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.bbox_head.rtm_ang[0].weight.grad is not None


def test_trainer_runs_a_rotated_epoch_and_scores_dota_map(rot_data, tmp_path):
    from rtmdet.train.config import TrainConfig
    from rtmdet.train.trainer import Trainer
    cfg = TrainConfig(data=str(rot_data / "obb"), model="rtmdet-r-tiny", epochs=1, batch=3, imgsz=96,
                      workers=0, device="cpu", project=str(tmp_path), name="r", plots=False,
                      pretrained_backbone=False)
    tr = Trainer(cfg)
    assert tr.lr == pytest.approx(0.004 / 16 * 3 / 8)  # RTMDet-R's base lr, scaled to batch 3
    assert "RandomRotate" in repr(tr._loader(0).dataset.pipeline)
    assert tr.stage_of(0) == 1  # one pipeline: no stage 2, no per-epoch validation at the end
    metrics = tr.train()
    assert set(metrics) == {"mAP50"} and 0.0 <= metrics["mAP50"] <= 1.0
    assert (tr.save_dir / "best.pth").is_file()
    assert rtmdet.load(tr.save_dir / "best.pth").family.name == "rotated"


# ---------------------------------------------------------------------------- smoke training

@pytest.mark.slow
def test_rotated_tiny_learns_rotated_shapes_on_cpu(tmp_path):
    """RTMDet-R tiny from scratch on 48 synthetic rotated-shape images (192 px), through the
    RTMDet-R pipeline (3-direction flips, free rotations) on CPU, reaches a clearly non-trivial
    DOTA mAP50 on its held-out split. lr 0.004 at batch 8 with a 20-step warm-up (the recipe's
    0.00025 is for 36 epochs of DOTA from an ImageNet backbone); validation only at the end (the
    recipe has one stage: no per-epoch validation); one torch thread (see test_train_smoke)."""
    import time

    from rtmdet.train.config import TrainConfig
    from rtmdet.train.trainer import Trainer

    make_rotated_shapes_splits(tmp_path / "shapes", {"train": 48, "val": 16}, seed=0, image_size=(192, 192))
    cfg = TrainConfig(data=str(tmp_path / "shapes"), model="rtmdet-r-tiny", epochs=32, batch=8, imgsz=192,
                      workers=0, device="cpu", lr=0.004, warmup_iters=20, warmup_min_iters=20,
                      val_interval=100, seed=0, project=str(tmp_path), name="smoke", plots=False,
                      pretrained_backbone=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.time()
        trainer = Trainer(cfg)
        metrics = trainer.train()
        seconds = time.time() - t0
    finally:
        torch.set_num_threads(threads)
    print(f"rotated smoke: {metrics} in {seconds:.0f} s")
    assert trainer.iteration == 32 * 6 and trainer.warmup == 20
    # observed: mAP50 0.191 after 192 iterations (0.126 at 16 epochs, 0.143 at 24; seed 1: 0.128),
    # about 190 s on 2 shared CPU cores; an untrained model scores ~0 (mAP50 0.002 after 48
    # iterations). The figure moves with small changes of the run (0.05-0.2 seen while tuning).
    assert metrics["mAP50"] > 0.06
