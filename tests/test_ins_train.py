"""RTMDet-Ins training end to end: masks stay aligned with boxes through the ins training
pipelines, and `rtmdet train --model rtmdet-ins-tiny` followed by `rtmdet val` reports segm."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rtmdet.data.loader import TrainDataset, collate
from rtmdet.data.targets import MaskTarget
from rtmdet.data.transforms import RandomCrop, build_train_pipeline


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from rtmdet.data.synthetic import make_shapes_splits
    root = tmp_path_factory.mktemp("ins_shapes")
    make_shapes_splits(root, {"train": 6, "val": 2}, image_size=(128, 128), scale_range=(0.25, 0.5))
    return root


def _train_set(root, size, stage):
    from rtmdet.data.datasets import load_dataset
    data = load_dataset(str(root), "train")
    return TrainDataset(data, model_size=f"ins-{size}", img_scale=128, stage=stage, seed=1, targets=("masks",))


@pytest.mark.parametrize("size,stage,recomputed", [("tiny", 2, True), ("s", 1, True), ("tiny", 1, False)])
def test_masks_follow_boxes_through_ins_pipeline(shapes, size, stage, recomputed):
    """Where RandomCrop recomputes boxes from masks (every ins stage 2; stage 1 except for
    rtmdet-ins-tiny) each box is its polygons' extent, and the drawn mask (pixels whose centre
    the polygon covers, roughly) lies inside it give or take a pixel; the boxes are checked
    exactly against the polygons in tests/test_polygon_masks.py. rtmdet-ins-tiny's stage 1
    keeps a plain crop, as its reference config; there masks and boxes still correspond."""
    ds = _train_set(shapes, size, stage)
    crops = [t for t in ds.pipeline.transforms if isinstance(t, RandomCrop)]
    assert crops and crops[0].recompute_bbox == recomputed
    seen = 0
    for k in range(12):
        item = ds[k % len(ds)]
        img, boxes, masks = item["img"], item["boxes"].numpy(), item["masks"].numpy()
        assert masks.dtype == np.uint8 and masks.shape == (len(boxes), *img.shape[-2:])
        drawn = masks.reshape(len(masks), -1).sum(1) > 0  # a sliver of a polygon may cover no centre
        assert len(boxes) and (drawn | ((boxes[:, 2:] - boxes[:, :2]).min(1) < 4)).all()
        mb = MaskTarget(masks[drawn]).boxes()
        slack = 1 if recomputed else 3
        assert (mb[:, :2] >= boxes[drawn, :2] - slack).all() and (mb[:, 2:] <= boxes[drawn, 2:] + slack).all()
        seen += len(boxes)
    assert seen >= 12
    batch = collate([ds[0], ds[1]])
    assert len(batch["masks"]) == 2 and all(m.shape[-2:] == batch["imgs"].shape[-2:] for m in batch["masks"])


def test_loader_ships_masks_on_the_loss_grid(shapes):
    # target_steps={"masks": 4} (what the segment family asks for): each item's masks are the
    # full item's masks at [2::4, 2::4], nothing else changes
    from rtmdet.data.datasets import load_dataset
    from rtmdet.families import get_family
    assert dict(get_family("segment").target_steps) == {"masks": 4}
    data = load_dataset(str(shapes), "train")
    for stage in (1, 2):
        full, grid = (TrainDataset(data, model_size="ins-s", img_scale=128, stage=stage, seed=1,
                                   targets=("masks",), target_steps=steps) for steps in (None, {"masks": 4}))
        for k in range(8):
            a, b = full[k % len(full)], grid[k % len(grid)]
            assert torch.equal(a["img"], b["img"]) and torch.equal(a["boxes"], b["boxes"])
            assert b["masks"].shape == (len(a["boxes"]), 32, 32)
            assert torch.equal(b["masks"], a["masks"][:, 2::4, 2::4])
    with pytest.raises(ValueError, match="target_steps"):
        TrainDataset(data, model_size="ins-s", targets=("masks",), target_steps={"rboxes": 4})


def test_ins_pipeline_matches_reference_configs():
    tiny1 = build_train_pipeline("ins-tiny", 1).transforms
    crop = next(t for t in tiny1 if isinstance(t, RandomCrop))
    assert not crop.recompute_bbox and not crop.allow_negative_crop  # rtmdet-ins_tiny stage 1
    for size, stage in (("tiny", 2), ("s", 1), ("l", 2)):
        crop = next(t for t in build_train_pipeline(f"ins-{size}", stage).transforms
                    if isinstance(t, RandomCrop))
        assert crop.recompute_bbox and crop.allow_negative_crop, (size, stage)


def test_cli_train_ins_tiny_then_val_prints_segm(shapes, tmp_path, capsys):
    import rtmdet
    from rtmdet.checkpoint import safe_load
    from rtmdet.cli import main
    torch.set_num_threads(2)
    rc = main(["train", "--model", "rtmdet-ins-tiny", "--data", str(shapes), "--epochs", "1",
               "--batch", "3", "--imgsz", "128", "--workers", "0", "--device", "cpu",
               "--project", str(tmp_path), "--name", "ins", "plots=false", "warmup_iters=1",
               "pretrained_backbone=false"])
    assert rc == 0
    run = tmp_path / "ins"
    ck = safe_load(run / "last.pth")
    assert ck["epoch"] == 1 and ck["iteration"] == 2
    header, row = (run / "results.csv").read_text().strip().splitlines()
    cols = dict(zip(header.split(","), row.split(",")))
    for k in ("loss_cls", "loss_bbox", "loss_mask", "loss", "AP", "mask_AP"):
        assert cols[k] != "" and np.isfinite(float(cols[k])), k
    assert float(cols["loss_mask"]) > 0
    best = safe_load(run / "best.pth")
    assert best["best_fitness"] == pytest.approx(float(cols["mask_AP"]))  # best.pth follows mask AP
    model = rtmdet.load(run / "best.pth")
    assert model.cfg.family == "segment" and model.cfg.num_classes == 3
    capsys.readouterr()
    assert main(["val", "--weights", str(run / "best.pth"), "--data", str(shapes), "--imgsz", "128",
                 "--save-dir", str(tmp_path / "val")]) == 0
    out = capsys.readouterr().out
    assert "segm:" in out
    segm = out.split("segm:", 1)[1]
    assert "AP" in segm and "AP50" in segm



def test_to_dict_has_rle_masks_and_rtmdetins_is_exported():
    import json

    import rtmdet
    from rtmdet.data.loader import decode_rle
    from rtmdet.detections import Detections
    assert isinstance(rtmdet.create("rtmdet-ins-tiny", num_classes=2), rtmdet.RTMDetIns)
    masks = np.zeros((2, 7, 9), bool)
    masks[0, 1:4, 2:6] = True
    masks[1, 5:, :3] = True
    d = Detections(torch.tensor([[2.0, 1, 6, 4], [0, 5, 3, 7]]), torch.tensor([0.9, 0.5]),
                   torch.tensor([1, 0]), ["a", "b"], masks=torch.from_numpy(masks), image_shape=(7, 9))
    out = json.loads(json.dumps(d.to_dict()))
    for det, m in zip(out["detections"], masks):
        assert det["mask"]["size"] == [7, 9]
        assert np.array_equal(decode_rle(det["mask"]).astype(bool), m)
    plain = Detections(torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long))
    assert "mask" not in plain.to_dict()["detections"][0]
