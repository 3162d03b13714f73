"""Test-time augmentation (`predict(tta=True)`, `--tta`): the reference's six views (3 scales x
flip, padded to the largest), each post-processed as usual, mirrored back and merged by NMS
at 0.6 keeping 100 — checked against the same steps done by hand with the public API."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision

import rtmdet
from helpers import model_with_boxes, save_model
from rtmdet.cli import main
from rtmdet.inference.tta import tta_sizes, tta_views


@pytest.fixture(scope="module")
def model():
    """A random 3-class tiny at 320 (views 320/160/480, padded to 480) whose every prior
    predicts a box, so each view has detections to merge."""
    return model_with_boxes(["a", "b", "c"], imgsz=320, box_bias=(0.5, 3.0))


def _image(h=150, w=200, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (h // 10, w // 10, 3), dtype=np.uint8), (w, h))
    return np.ascontiguousarray(img)


def test_sizes_are_the_references_for_640():
    assert tta_sizes((640, 640)) == ([(640, 640), (320, 320), (960, 960)], (960, 960))
    assert tta_sizes((416, 416))[1] == (640, 640)  # 624 padded to a multiple of 32


def test_views_are_resize_then_flip_then_pad():
    img = _image()
    views, metas, flips = tta_views(img, (320, 320))
    assert flips == [True, False] * 3 and all(v.shape == (480, 480, 3) for v in views)
    for k, s in enumerate((320, 160, 480)):
        scale = min(s / 150, s / 200)  # keep ratio, long side to s
        nh, nw = int(150 * scale + 0.5), int(200 * scale + 0.5)
        resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        for view, meta, flip in zip(views[2 * k:2 * k + 2], metas[2 * k:2 * k + 2], flips[2 * k:2 * k + 2]):
            want = np.full((480, 480, 3), 114, np.uint8)
            want[:nh, :nw] = resized[:, ::-1] if flip else resized
            assert np.array_equal(view, want)
            assert meta.scale_factor == (nw / 200, nh / 150) and meta.img_shape == (480, 480)


def test_tta_is_the_views_predicted_then_merged(model):
    """Each view predicted as an ordinary 480 px image (no resize, no pad: the canvas already
    is the input), its boxes divided by the view's scale and mirrored with the original width,
    then mmcv's batched NMS (class offsets, IoU > 0.6 suppresses) and the best 100."""
    img = _image()
    got = model.predict(img, tta=True)
    views, metas, flips = tta_views(img, (320, 320))
    per_view = model.predict(views, imgsz=480, batch_size=8)
    boxes, scores, labels = [], [], []
    for d, meta, flip in zip(per_view, metas, flips):
        b = d.boxes / torch.tensor(meta.scale_factor * 2)
        if flip:
            b = torch.stack([200 - b[:, 2], b[:, 1], 200 - b[:, 0], b[:, 3]], 1)
        boxes.append(b), scores.append(d.scores), labels.append(d.labels)
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    assert len(boxes) > 100, "enough candidates for the merge to choose"
    offsets = labels.float()[:, None] * (boxes.max() + 1)
    keep = torchvision.ops.nms(boxes + offsets, scores, 0.6)[:100]
    assert len(got) == len(keep) == 100
    torch.testing.assert_close(got.boxes, boxes[keep], rtol=0, atol=1e-4)
    torch.testing.assert_close(got.scores, scores[keep], rtol=0, atol=0)
    assert torch.equal(got.labels, labels[keep]) and got.image_shape == (150, 200)


def test_tta_batches_images_and_knobs_reach_the_views(model):
    a, b = _image(seed=1), _image(120, 90, seed=2)
    # the 12 views of two images in batches of 6 (the same batches as one image at a time, so
    # the same arithmetic: bit-equal), and split across batches of 5 (the same count)
    both = model.predict([a, b], tta=True, batch_size=6)
    assert torch.equal(both[0].boxes, model.predict(a, tta=True, batch_size=6).boxes)
    assert torch.equal(both[1].scores, model.predict(b, tta=True, batch_size=6).scores)
    assert [len(d) for d in model.predict([a, b], tta=True, batch_size=5)] == [len(d) for d in both]
    few = model.predict(a, tta=True, max_per_img=2)  # 2 per view: at most 12 to merge
    assert len(few) <= 12


def test_tta_errors(model, tmp_path, capsys):
    img = _image()
    with pytest.raises(ValueError, match="tta and tile do not combine"):
        model.predict(img, tta=True, tile=256)
    ins = rtmdet.create("rtmdet-ins-tiny", num_classes=3)
    with pytest.raises(ValueError, match="tta: detection models only"):
        ins.predict(img, tta=True)
    cv2.imwrite(str(tmp_path / "x.png"), img)
    path = save_model(model, tmp_path / "m.pth")
    assert main(["predict", str(tmp_path / "x.png"), "--weights", str(path), "--tta", "--tile", "640",
                 "--save-dir", str(tmp_path / "o")]) == 2
    assert "--tta and --tile do not combine" in capsys.readouterr().err


def test_cli_predict_and_val_take_tta(model, tmp_path, capsys):
    import json

    from helpers import shapes_data
    data = shapes_data(tmp_path / "data", train=1, val=2)
    path = save_model(model, tmp_path / "m.pth")
    img = next((data / "images" / "val").glob("*.jpg"))
    assert main(["predict", str(img), "--weights", str(path), "--tta", "--score-thr", "0.0", "--no-fuse",
                 "--save-json", "--no-save", "--save-dir", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "predictions.json").read_text())[0]
    want = model.predict(str(img), tta=True, score_thr=0.0)
    assert len(rec["detections"]) == len(want) > 0
    np.testing.assert_allclose([d["box"] for d in rec["detections"]], want.boxes.numpy(), atol=1e-3)
    capsys.readouterr()
    assert main(["val", "--data", str(data), "--weights", str(path), "--tta", "--no-fuse"]) == 0
    assert "COCO bbox metrics" in capsys.readouterr().out


def test_merge_mirrors_flipped_views_and_suppresses_above_0_6():
    from rtmdet.detections import Detections
    from rtmdet.inference.tta import merge_views

    def det(boxes, scores, labels):
        return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores),
                          torch.tensor(labels), ["a", "b"])
    # a flipped view's box [150, 0, 190, 100] is [10, 0, 50, 100] in a 200 px wide image
    flipped = det([[150, 0, 190, 100]], [0.9], [0])
    # IoU with [10, 0, 50, 100]: 0.62 (suppressed), 0.58 (kept); the same box of class b (kept)
    plain = det([[10, 0, 74.52, 100], [10, 0, 78.97, 100], [10, 0, 50, 100]], [0.8, 0.7, 0.6], [0, 0, 1])
    out = merge_views([flipped, plain], [True, False], (120, 200))
    assert out.boxes.tolist() == [[10, 0, 50, 100], pytest.approx([10, 0, 78.97, 100]), [10, 0, 50, 100]]
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.6]) and out.labels.tolist() == [0, 0, 1]
    many = det([[3 * i, 0, 3 * i + 2, 2] for i in range(150)], torch.rand(150).tolist(), [0] * 150)
    top = merge_views([many], [False], (10, 500))
    assert len(top) == 100 and torch.equal(top.scores, many.scores.sort(descending=True).values[:100])


def test_exported_graphs(model, tmp_path):
    """A dynamic-shape ONNX graph takes the padded views (the same number of merged boxes); a
    static one cannot and says so."""
    pytest.importorskip("onnxruntime")
    from rtmdet.deploy import export_onnx
    img = _image()
    export_onnx(model, tmp_path / "dyn.onnx", imgsz=320, dynamic=True)
    export_onnx(model, tmp_path / "static.onnx", imgsz=320)
    got = rtmdet.Detector(tmp_path / "dyn.onnx").predict(img, tta=True)
    assert len(got) == len(model.predict(img, tta=True)) == 100
    with pytest.raises(ValueError, match="tta: its views are 480x480"):
        rtmdet.Detector(tmp_path / "static.onnx").predict(img, tta=True)
