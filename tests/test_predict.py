"""The whole inference path, uint8 image -> boxes in original pixels, against the reference."""
import cv2
import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.config import MEAN_BGR, STD_BGR
from rtmdet.data.letterbox import fit_size, letterbox
from rtmdet.data.images import ImageReadError
from helpers import DET_FIX, load_fixture, match_detections, need

CASES = ["square", "portrait", "large"]


@pytest.fixture(scope="module")
def model():
    return rtmdet.load(need(DET_FIX / "weights.pth"))


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return load_fixture(DET_FIX / f"predict_{request.param}.pth")


def test_preprocess_is_the_reference_input(model, case):
    img = case["image_bgr"].numpy()
    x, metas = model.preprocess([img])
    torch.testing.assert_close(x, case["input"], atol=1e-5, rtol=0)
    sw, sh = metas[0].scale_factor
    ref_sw, ref_sh = case["meta"]["scale_factor"]
    assert sw == pytest.approx(ref_sw, abs=1e-9) and sh == pytest.approx(ref_sh, abs=1e-9)


def test_predict_matches_reference_detections(model, case):
    cfg = case["test_cfg"]
    det = model.predict(case["image_bgr"].numpy(), score_thr=cfg["score_thr"],
                        nms_iou=cfg["nms"]["iou_threshold"], max_per_img=cfg["max_per_img"],
                        nms_pre=cfg["nms_pre"])
    assert len(det) == len(case["scores"])
    assert match_detections(det.boxes, det.scores, det.labels,
                            case["bboxes"], case["scores"], case["labels"]) == 0
    assert torch.all(det.scores[:-1] >= det.scores[1:]), "not sorted by score"
    assert det.image_shape == tuple(case["image_bgr"].shape[:2])


def test_batched_equals_one_by_one(model):
    imgs = [load_fixture(DET_FIX / f"predict_{c}.pth")["image_bgr"].numpy() for c in CASES]
    batched = model.predict(imgs, batch_size=3, score_thr=0.01)
    for img, b in zip(imgs, batched):
        s = model.predict(img, score_thr=0.01)
        assert len(s) == len(b)
        assert match_detections(b.boxes, b.scores, b.labels, s.boxes, s.scores, s.labels,
                                score_tol=1e-5, box_tol=1e-2) == 0


def test_knobs_change_the_result(model):
    img = load_fixture(DET_FIX / "predict_square.pth")["image_bgr"].numpy()
    base = model.predict(img)
    few = model.predict(img, max_per_img=7)
    assert len(few) == 7
    torch.testing.assert_close(few.scores, base.scores[:7])
    thr = float(base.scores[40])  # random weights: scores are low, pick a threshold from them
    high = model.predict(img, score_thr=thr)
    assert len(high) == int((base.scores > thr).sum()) >= 40
    assert bool((high.scores > thr).all())
    strict = model.predict(img, score_thr=thr, nms_iou=0.1)
    assert len(strict) < len(high)
    pre = model.predict(img, nms_pre=5)
    assert len(pre) <= 15  # at most 5 candidates per level survive


def test_inputs_path_list_and_array(model, tmp_path):
    img = load_fixture(DET_FIX / "predict_portrait.pth")["image_bgr"].numpy()
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), img)
    from_path = model.predict(str(path), score_thr=0.01)
    from_array = model.predict(img, score_thr=0.01)
    assert isinstance(from_path, rtmdet.Detections) and from_path.source == str(path)
    torch.testing.assert_close(from_path.boxes, from_array.boxes)
    both = model.predict([path, img], score_thr=0.01)
    assert len(both) == 2 and both[1].source is None


def test_corrupt_and_missing_images_raise_clear_errors(model, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        model.predict(str(bad))
    with pytest.raises(ImageReadError, match="no such file"):
        model.predict(str(tmp_path / "missing.jpg"))
    with pytest.raises(ImageReadError, match="uint8"):
        model.predict(np.zeros((8, 8, 3), np.float32))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty.png: an empty file \(0 bytes\)"):
        model.predict(str(tmp_path / "empty.png"))
    with pytest.raises(ImageReadError, match=r"a folder, not an image \(model.stream\(folder\)"):
        model.predict(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ImageReadError, match=r"clip.mp4: a video, not an image \(model.stream\(video\)"):
        model.predict(tmp_path / "clip.mp4")


def test_detections_outputs(model):
    img = load_fixture(DET_FIX / "predict_square.pth")["image_bgr"].numpy()
    det = model.predict(img, score_thr=0.03)
    n = det.numpy()
    assert isinstance(n.boxes, np.ndarray) and n.boxes.shape == (len(det), 4)
    d = det.to_dict()
    assert len(d["detections"]) == len(det)
    assert d["detections"][0]["name"] == rtmdet.api.RTMDet(model.cfg).class_names[int(n.labels[0])]
    coco = det.to_coco(image_id=7, cat_ids=list(range(1, 81)))
    x1, y1, x2, y2 = n.boxes[0]
    assert coco[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-4)
    assert coco[0]["category_id"] == int(n.labels[0]) + 1
    drawn = det.draw(img)
    assert drawn.shape == img.shape and (drawn != img).any() and (img == load_fixture(
        DET_FIX / "predict_square.pth")["image_bgr"].numpy()).all()
    assert len(det.to_txt().splitlines()) == len(det)


@pytest.mark.parametrize("h,w", [(640, 640), (500, 375), (1080, 1920), (1, 1000), (333, 10)])
def test_letterbox_arithmetic(h, w):
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    out, (sw, sh), (nh, nw) = letterbox(img, (640, 640))
    s = 640 / max(h, w)  # independent statement of "fit inside 640x640"
    assert (nh, nw) == (int(h * s + 0.5), int(w * s + 0.5)) == fit_size(h, w, (640, 640))
    assert out.shape == (640, 640, 3)
    assert (out[nh:] == 114).all() and (out[:, nw:] == 114).all()
    assert sw == nw / w and sh == nh / h


@pytest.mark.parametrize("size", [(640, 640), (320, 480)])
def test_letterbox_batch_is_the_stacked_letterboxes(size):
    """The batch is written plane by plane in place: the same array as stacking the letterboxed
    HWC images and transposing, for mixed shapes (whole-row images written straight into the
    planes, the others through the padded copy; downscaled, upscaled, unscaled) and for a
    non-contiguous (channel-flipped) view; into a fresh array or over the garbage of a reused
    one (every byte, padding included, is written)."""
    from rtmdet.data.letterbox import letterbox_batch
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            for h, w in [(480, 640), (1080, 1920), (375, 500), (640, 640), (100, 2000), (3000, 200),
                         (20, 64), (64, 20), (1, 1000), (320, 480)]]
    imgs.append(imgs[0][:, :, ::-1])
    want = np.stack([letterbox(i, size)[0] for i in imgs]).transpose(0, 3, 1, 2)
    got, metas = letterbox_batch(imgs, size)
    assert got.flags.c_contiguous and got.dtype == np.uint8 and np.array_equal(got, want)
    assert [m.scale_factor for m in metas] == [letterbox(i, size)[1] for i in imgs]
    reused = rng.integers(0, 255, want.shape, dtype=np.uint8)
    again, again_metas = letterbox_batch(imgs, size, out=reused)
    assert again is reused and np.array_equal(again, want) and again_metas == metas


def test_normalization_constants_are_bgr_order():
    x = torch.tensor(MEAN_BGR).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    m = rtmdet.create("rtmdet-tiny")
    assert torch.allclose(m.normalize(x), torch.zeros(1, 3, 2, 2))
    assert STD_BGR[0] == 57.375


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalize_in_place_gives_the_formula_and_leaves_its_input(dtype):
    m = rtmdet.create("rtmdet-tiny")
    x = torch.randint(0, 256, (2, 3, 9, 7), dtype=torch.uint8).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)  # as the training step gives it
    before = x.clone()
    got = m.normalize(x)
    assert torch.equal(got, (x.float() - m.mean) / m.std)  # bit for bit
    assert torch.equal(x, before) and got.data_ptr() != x.data_ptr()
    assert got.is_contiguous(memory_format=torch.channels_last)
