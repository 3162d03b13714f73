"""RTMDet-Ins: architecture, parity with the reference fixtures, mask encodings."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rtmdet.api import build_model, infer_config, load
from rtmdet.config import TestConfig as InsTestConfig
from rtmdet.presets import model_config
from rtmdet.detections import Detections
from rtmdet.models.detector_ins import RTMDetIns
from rtmdet.models.head_ins import RTMDetInsSepBNHead
from rtmdet.ops.masks import mask_to_polygons, rle_decode, rle_encode

from helpers import INS_FIX, load_fixture, mask_ious, match_detections, need, unpack_masks

TOL = dict(atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def model() -> RTMDetIns:
    torch.manual_seed(0)
    return load(need(INS_FIX / "weights.pth"), progress=False)


def fixture_test_cfg(tc: dict) -> InsTestConfig:
    return InsTestConfig(score_thr=tc["score_thr"], nms_pre=tc["nms_pre"],
                      nms_iou=tc["nms"]["iou_threshold"], max_per_img=tc["max_per_img"],
                      min_bbox_size=tc["min_bbox_size"], mask_thr=tc["mask_thr_binary"])


# ---------------------------------------------------------------- architecture

@pytest.mark.parametrize("size,millions", [("tiny", 5.638), ("s", 10.183), ("m", 27.575),
                                           ("l", 57.366), ("x", 102.704)])
def test_param_counts(size, millions):
    with torch.device("meta"):
        m = build_model(model_config(f"rtmdet-ins-{size}"))
    assert isinstance(m, RTMDetIns)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 3) == millions


def test_head_layout_and_init():
    torch.manual_seed(0)
    head = RTMDetInsSepBNHead(80, 32, 32, 2)
    assert head.num_gen_params == 169 and head.weight_nums == [80, 64, 8]
    assert head.bias_nums == [8, 8, 1]
    assert head.reg_convs[1] is head.cls_convs[1]  # the reference's shared tower
    assert head.cls_convs[2][0].conv is head.cls_convs[0][0].conv
    assert head.kernel_convs[1][0].conv is not head.kernel_convs[0][0].conv
    assert head.cls_convs[1][0].bn is not head.cls_convs[0][0].bn
    for reg, cls in zip(head.rtm_reg, head.rtm_cls):
        assert torch.all(reg.bias == 1)
        assert torch.allclose(cls.bias, torch.full_like(cls.bias, -4.59511985))
    assert float(head.rtm_kernel[0].weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    feats = [torch.randn(2, 32, s, s) for s in (16, 8, 4)]
    cls, reg, ker, mf = head(feats)
    assert [c.shape for c in cls] == [(2, 80, s, s) for s in (16, 8, 4)]
    assert [k.shape for k in ker] == [(2, 169, s, s) for s in (16, 8, 4)]
    assert mf.shape == (2, 8, 16, 16) and all(bool((r >= 0).all()) for r in reg)


def test_strict_load_and_infer(model):
    ckpt = load_fixture(INS_FIX / "weights.pth")
    cfg = infer_config(ckpt["state_dict"], ckpt.get("meta"))
    assert cfg.family == "segment" and cfg.neck_out_channels == 96
    assert isinstance(model, RTMDetIns) and not model.training
    fresh = build_model(cfg)
    fresh.load_state_dict(ckpt["state_dict"], strict=True)
    assert set(fresh.state_dict()) == set(ckpt["state_dict"])


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("case", ["square", "rect"])
def test_forward_parity(model, case):
    fix = load_fixture(INS_FIX / "forward.pth")[case]
    with torch.no_grad():
        cls, reg, ker, mf = model(fix["input"])
    ref_cls, ref_reg, ref_ker, ref_mf = fix["head"]
    for ours, ref in [(cls, ref_cls), (reg, ref_reg), (ker, ref_ker)]:
        assert len(ours) == len(ref) == 3
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(mf, ref_mf, **TOL)


@pytest.mark.parametrize("name", ["square", "portrait", "large"])
def test_predict_parity(model, name):
    fix = load_fixture(INS_FIX / f"predict_{name}.pth")
    image = fix["image_bgr"].numpy()
    batch, metas = model.preprocess([image], 640)
    torch.testing.assert_close(batch, fix["input"], atol=1e-4, rtol=0)
    saved = model.test_cfg
    model.test_cfg = fixture_test_cfg(fix["test_cfg"])
    try:
        det = model.predict(image)
    finally:
        model.test_cfg = saved
    ref_masks = unpack_masks(fix)
    assert len(det) == len(fix["scores"]) == ref_masks.shape[0]
    assert det.masks.dtype == torch.bool
    assert tuple(det.masks.shape) == ref_masks.shape
    assert match_detections(det.boxes, det.scores, det.labels,
                            fix["bboxes"], fix["scores"], fix["labels"]) == 0
    ious = mask_ious(det, fix)
    assert min(ious) >= 0.99, min(ious)


def test_predict_empty(model):
    img = np.full((120, 200, 3), 114, np.uint8)
    det = model.predict(img, score_thr=1.0)
    assert len(det) == 0 and tuple(det.masks.shape) == (0, 120, 200)
    assert det.to_coco(1) == []


# ---------------------------------------------------------------- encodings

def _masks():
    rng = np.random.default_rng(0)
    big = np.zeros((1080, 1920), bool)
    big[100:900, 200:1500] = True
    big[500:600, 700:800] = False
    return [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.zeros((0, 3), bool),
            rng.random((37, 53)) > 0.5, rng.random((300, 200)) > 0.99, big]


@pytest.mark.parametrize("i", range(6))
def test_rle_matches_pycocotools(i):
    pm = pytest.importorskip("pycocotools.mask")
    m = _masks()[i]
    ours = rle_encode(m)
    ref = pm.encode(np.asfortranarray(m.astype(np.uint8)))
    assert ours["counts"].encode() == ref["counts"] and ours["size"] == list(ref["size"])
    assert np.array_equal(rle_decode(ours), m)
    assert np.array_equal(rle_decode(ref), m)
    assert np.array_equal(pm.decode({"size": ours["size"], "counts": ours["counts"]}).astype(bool), m)


def test_detections_mask_exports():
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 5:15, 10:30] = True
    masks[1, 20:35, 40:55] = True
    masks[1, 2:4, 2:4] = True
    det = Detections(torch.tensor([[10., 5., 30., 15.], [2., 2., 55., 35.]]),
                     torch.tensor([0.9, 0.8]), torch.tensor([0, 3]), masks=torch.from_numpy(masks),
                     image_shape=(40, 60))
    rles = det.masks_rle()
    assert [np.array_equal(rle_decode(r), m) for r, m in zip(rles, masks)] == [True, True]
    coco = det.to_coco(7, cat_ids=list(range(1, 81)))
    assert coco[1]["segmentation"] == rles[1] and coco[1]["category_id"] == 4
    assert isinstance(coco[0]["segmentation"]["counts"], str)
    polys = det.masks_polygons()
    assert len(polys[0]) == 1 and len(polys[1]) == 2
    xs, ys = polys[0][0][0::2], polys[0][0][1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (10, 29, 5, 14)
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []
    plain = dataclasses.replace(det, masks=None)
    assert "segmentation" not in plain.to_coco(1)[0]
    with pytest.raises(ValueError):
        plain.masks_rle()


# ---------------------------------------------------------------- mask loss

def test_loss_mask_parity():
    from rtmdet.ops.boxes import grid_priors
    from rtmdet.train.loss_mask import loss_mask
    fix = load_fixture(INS_FIX / "loss.pth")
    m = load(need(INS_FIX / "weights.pth"), progress=False).train()  # batch-statistics BN
    cls, _, ker, mask_feat = m(fix["inputs"])
    priors = torch.cat(grid_priors([c.shape[-2:] for c in cls], m.cfg.strides, with_stride=True))
    kernels = torch.cat([k.permute(0, 2, 3, 1).reshape(k.shape[0], -1, k.shape[1]) for k in ker], 1)
    loss = loss_mask(mask_feat, kernels, priors, [a["gt_inds"] for a in fix["assigned"]],
                     [g["masks"] for g in fix["gt"]])
    torch.testing.assert_close(loss.detach(), fix["losses"]["loss_mask"], atol=0, rtol=1e-3)
    loss.backward()  # rtm_kernel feeds only the mask loss, so its gradients must match `total`'s
    params = dict(m.named_parameters())
    checked = 0
    for name, ref in fix["grads"].items():
        if ".rtm_kernel." in name:
            g = params[name].grad
            torch.testing.assert_close(g, ref, atol=1e-3 * float(ref.abs().max()), rtol=1e-3)
            checked += 1
    assert checked == 6


def test_loss_mask_no_positives():
    from rtmdet.train.loss_mask import loss_mask
    feats = torch.randn(1, 8, 10, 10, requires_grad=True)
    loss = loss_mask(feats, torch.randn(1, 5, 169), torch.zeros(5, 4),
                     [torch.zeros(5, dtype=torch.long)], [torch.zeros(0, 80, 80)])
    assert loss.detach().item() == 0.0 and loss.requires_grad


# ---------------------------------------------------------------- usability

def test_predict_batch_fuse_draw(model):
    import copy
    img = load_fixture(INS_FIX / "predict_portrait.pth")["image_bgr"].numpy()
    imgs = [img, np.ascontiguousarray(img[:200, 60:360])]
    both = model.predict(imgs, score_thr=0.01, batch_size=2)
    assert len(both) == 2
    assert [tuple(d.masks.shape[1:]) for d in both] == [(500, 375), (200, 300)]
    ref = load_fixture(INS_FIX / "predict_portrait.pth")
    assert match_detections(both[0].boxes, both[0].scores, both[0].labels,
                            ref["bboxes"], ref["scores"], ref["labels"]) == 0
    single = both[0]
    fdet = copy.deepcopy(model).fuse().predict(img, score_thr=0.01)
    assert match_detections(fdet.boxes, fdet.scores, fdet.labels,
                            single.boxes, single.scores, single.labels, 1e-3, 0.05) <= 2
    loose = model.predict(img, score_thr=0.01, mask_thr=0.2)
    assert int(loose.masks.sum()) >= int(single.masks.sum())
    assert model.test_cfg.mask_thr == 0.5
    drawn = single.draw(img, score_thr=0.3)
    assert drawn.shape == img.shape and drawn.dtype == np.uint8


def test_batched_mask_logits_equal_per_image(model, monkeypatch):
    """The batch-at-once dynamic convs (GPUs) give the per-image ones' logits (CPU), so the same
    masks; images with different numbers of detections (padding) and one with none."""
    import rtmdet.families.segment as seg
    images = [load_fixture(INS_FIX / f"predict_{n}.pth")["image_bgr"].numpy()
              for n in ("square", "portrait", "large")]
    images.append(np.full((120, 200, 3), 114, np.uint8))
    kw = dict(score_thr=0.014, max_per_img=40)  # fixture scores: ~0.012-0.015
    per_image = model.predict(images, **kw)
    monkeypatch.setattr(seg, "_per_image_masks", lambda feat: False)
    at_once = model.predict(images, **kw)
    counts = [len(d) for d in per_image]
    assert len(set(counts)) > 1 and max(counts) > 0, counts
    for a, b in zip(per_image, at_once):
        assert torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
        differ = int((a.masks != b.masks).sum())
        assert differ <= a.masks.numel() // 1_000_000, differ  # at most float rounding at 0.5
