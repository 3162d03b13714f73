"""`train_batch_stage<N>.jpg`: the first batch of each stage drawn with its ground truth
(`rtmdet.viz.draw_batch`), where the boxes are, scaled with the picture, and never a change to
what the run computes."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from helpers import shapes_data, tiny_train_cfg
from rtmdet.checkpoint import safe_load
from rtmdet.train import train
from rtmdet.viz import draw_batch, palette

GREY = 90


def _batch(n=5, h=100, w=120, **extra):
    imgs = torch.full((n, 3, h, w), GREY, dtype=torch.uint8)
    return {"imgs": imgs, "boxes": [torch.tensor([[10.0, 20.0, 60.0, 80.0]])] * n,
            "labels": [torch.tensor([1])] * n, "ignored_boxes": [torch.zeros(0, 4)] * n, **extra}


def _near(img, y, x, colour, tol=20) -> bool:
    """Whether a pixel within one of (y, x) has `colour` (lines are anti-aliased)."""
    win = img[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].reshape(-1, 3).astype(int)
    return int(np.abs(win - np.asarray(colour)).max(1).min()) <= tol


@pytest.mark.parametrize("max_side, s", [(10_000, 1.0), (180, 0.5)])
def test_boxes_land_where_the_labels_say(max_side, s):
    colour = palette(3)[1]
    grid = draw_batch(_batch(), ["a", "b", "c"], max_side=max_side)
    th, tw = round(100 * s), round(120 * s)
    assert grid.shape == (2 * th, 3 * tw, 3)  # 5 images: 3 columns, 2 rows
    for k in range(5):
        r, c = divmod(k, 3)
        tile = grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw].astype(int)
        assert _near(tile, round(80 * s), round(35 * s), colour), "bottom edge"
        assert _near(tile, round(50 * s), round(60 * s), colour), "right edge"
        assert (tile[round(60 * s), round(35 * s)] == GREY).all(), "inside the box: untouched"
        assert (tile[round(90 * s), round(100 * s)] == GREY).all(), "outside: untouched"
    assert (grid[th:, 2 * tw:] == 255).all(), "the sixth cell is empty"


def test_ignored_and_rotated_boxes():
    b = _batch(n=1, h=200, w=200)
    b["ignored_boxes"] = [torch.tensor([[150.0, 150.0, 190.0, 190.0]])]
    # a 60 x 60 square turned 45 degrees about (70, 70): its hull corner (70 - 42, 70 - 42) stays empty
    b["rboxes"] = [torch.tensor([[70.0, 70.0, 60.0, 60.0, math.pi / 4]])]
    b["boxes"] = [torch.tensor([[70 - 42.43, 70 - 42.43, 70 + 42.43, 70 + 42.43]])]
    grid = draw_batch(b, ["a", "b", "c"]).astype(int)
    assert _near(grid, 190, 170, (128, 128, 128)), "ignored box in grey"
    assert _near(grid, 70 + 42, 70, palette(3)[1]), "the rotated square's bottom corner"
    assert (grid[70 + 40, 70 - 40] == GREY).all(), "the axis-aligned hull is not drawn"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("pictures") / "data", train=4, val=1)


def test_a_run_draws_each_stage_once_and_computes_the_same(data, tmp_path):
    kw = dict(epochs=2, stage2_epochs=1, pipeline="recipe", batch=2, deterministic=True, val_interval=5)
    drawn = train(tiny_train_cfg(data, tmp_path, name="drawn", plots=True, **kw))
    plain = train(tiny_train_cfg(data, tmp_path, name="plain", plots=False, **kw))
    for stage in (1, 2):
        pic = cv2.imread(str(drawn.save_dir / f"train_batch_stage{stage}.jpg"))
        assert pic is not None and pic.shape == (64, 128, 3)  # 2 images of 64 px side by side
    assert not list(plain.save_dir.glob("train_batch_*"))
    a, b = safe_load(drawn.last), safe_load(plain.last)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
