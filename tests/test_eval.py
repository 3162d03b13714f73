"""COCO evaluation: parity with pycocotools (computed independently here) and the helpers around it."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from rtmdet.data.records import DetectionDataset, ImageRecord
from rtmdet.eval.coco import (
    METRIC_NAMES,
    confusion_matrix,
    dataset_to_coco,
    evaluate_coco,
    format_table,
    save_coco_json,
    to_coco_results,
)
from rtmdet.eval.plots import plot_confusion_matrix, plot_pr_curves

pycoco = pytest.importorskip("pycocotools.coco")
pycocoeval = pytest.importorskip("pycocotools.cocoeval")


# ----------------------------------------------------------------------------------- generators


def make_gt(rng, n_images=40, n_classes=5, crowd_frac=0.0, empty_frac=0.15, max_objs=8):
    """A random COCO gt dict with sparse category ids and boxes of all COCO size ranges."""
    cat_ids = sorted(rng.choice(np.arange(1, 4 * n_classes + 1), n_classes, replace=False).tolist())
    images, anns = [], []
    for i in range(n_images):
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        iid = int(1000 + 7 * i)  # non-contiguous image ids
        images.append({"id": iid, "file_name": f"{iid}.jpg", "width": w, "height": h})
        if rng.random() < empty_frac:
            continue
        for _ in range(int(rng.integers(1, max_objs + 1))):
            side = float(np.exp(rng.uniform(np.log(4), np.log(min(w, h) * 0.8))))
            bw, bh = side * rng.uniform(0.5, 1.0), side * rng.uniform(0.5, 1.0)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            anns.append({
                "id": len(anns) + 1, "image_id": iid, "category_id": int(rng.choice(cat_ids)),
                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": int(rng.random() < crowd_frac),
            })
    cats = [{"id": c, "name": f"cls{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": cats}


def make_dets(rng, gt, hit=0.75, wrong_label=0.1, n_fp=(0, 6), no_det_frac=0.1, jitter=0.15):
    """Per-image detections (xyxy, contiguous labels) derived from the gt plus false positives."""
    cat_ids = sorted(c["id"] for c in gt["categories"])
    by_img = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        by_img[a["image_id"]].append(a)
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    out = []
    for iid, anns in by_img.items():
        if rng.random() < no_det_frac:
            continue
        boxes, labels = [], []
        for a in anns:
            if rng.random() > hit:
                continue
            x, y, w, h = a["bbox"]
            dx, dy = rng.normal(0, jitter * w), rng.normal(0, jitter * h)
            sw, sh = np.exp(rng.normal(0, jitter)), np.exp(rng.normal(0, jitter))
            boxes.append([x + dx, y + dy, x + dx + w * sw, y + dy + h * sh])
            lab = cat_ids.index(a["category_id"])
            if rng.random() < wrong_label:
                lab = int(rng.integers(len(cat_ids)))
            labels.append(lab)
        W, H = sizes[iid]
        for _ in range(int(rng.integers(n_fp[0], n_fp[1] + 1))):
            bw, bh = rng.uniform(4, W / 2), rng.uniform(4, H / 2)
            x, y = rng.uniform(0, W - bw), rng.uniform(0, H - bh)
            boxes.append([x, y, x + bw, y + bh])
            labels.append(int(rng.integers(len(cat_ids))))
        out.append({
            "image_id": iid,
            "boxes": np.array(boxes, np.float32).reshape(-1, 4),
            "scores": rng.random(len(boxes)).astype(np.float32),
            "labels": np.array(labels, np.int64),
        })
    return out


def pycocotools_stats(gt: dict, dets: list[dict]):
    """The reference: pycocotools COCOeval on the same data, converted here independently."""
    cat_ids = sorted(c["id"] for c in gt["categories"])
    results = []
    for d in dets:
        for b, s, l in zip(np.asarray(d["boxes"], np.float64), np.asarray(d["scores"], np.float64), d["labels"]):
            results.append({"image_id": d["image_id"], "category_id": cat_ids[int(l)],
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = pycoco.COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = pycocoeval.COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.array(ev.stats[:12]), ev.eval["precision"]


def assert_parity(gt, dets):
    ours = evaluate_coco(gt, dets)
    ref_stats, ref_prec = pycocotools_stats(gt, dets)
    np.testing.assert_allclose([ours[k] for k in METRIC_NAMES], ref_stats, atol=1e-6, rtol=0)
    # per-class AP from the reference precision array (area all, maxDets 100)
    for k, row in enumerate(ours["per_class"]):
        p = ref_prec[:, :, k, 0, -1]
        ref_ap = p[p > -1].mean() if (p > -1).any() else float("nan")
        np.testing.assert_allclose(row["AP"], ref_ap, atol=1e-6, equal_nan=True)
    return ours, ref_stats


# ----------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_random_detections(seed):
    rng = np.random.default_rng(seed)
    gt = make_gt(rng, n_images=40, n_classes=5)
    dets = make_dets(rng, gt)
    ours, ref = assert_parity(gt, dets)
    assert 0.01 < ours["AP"] < 0.99 and ours["AP50"] > 0.1  # a non-trivial case, not all zeros or ones


def test_parity_many_classes_and_crowd():
    rng = np.random.default_rng(10)
    gt = make_gt(rng, n_images=60, n_classes=24, crowd_frac=0.15, max_objs=12)
    assert sum(a["iscrowd"] for a in gt["annotations"]) > 5
    dets = make_dets(rng, gt, n_fp=(0, 10))
    ours, _ = assert_parity(gt, dets)
    assert len(ours["per_class"]) == 24


def test_parity_more_than_100_detections_per_image():
    rng = np.random.default_rng(3)
    gt = make_gt(rng, n_images=6, n_classes=3, max_objs=30, empty_frac=0)
    dets = make_dets(rng, gt, n_fp=(120, 160), no_det_frac=0)
    assert max(len(d["scores"]) for d in dets) > 100
    assert_parity(gt, dets)


def test_perfect_detections_score_one():
    rng = np.random.default_rng(4)
    gt = make_gt(rng, n_images=20, n_classes=4, empty_frac=0.3)
    dets = make_dets(rng, gt, hit=1.0, wrong_label=0.0, n_fp=(0, 0), no_det_frac=0.0, jitter=0.0)
    ours, _ = assert_parity(gt, dets)
    for k in ("AP", "AP50", "AP75", "AR100"):
        assert ours[k] == pytest.approx(1.0, abs=1e-9)


def test_images_without_gt_or_detections():
    rng = np.random.default_rng(5)
    gt = make_gt(rng, n_images=30, n_classes=3, empty_frac=0.5)
    dets = make_dets(rng, gt, no_det_frac=0.4)
    empty_gt = {a["image_id"] for a in gt["annotations"]} ^ {im["id"] for im in gt["images"]}
    det_ids = {d["image_id"] for d in dets}
    assert empty_gt and ({im["id"] for im in gt["images"]} - det_ids)
    assert empty_gt & det_ids  # false positives on gt-free images count against precision
    assert_parity(gt, dets)


def test_no_detections_at_all_gives_zero():
    rng = np.random.default_rng(6)
    gt = make_gt(rng, n_images=5, n_classes=2, empty_frac=0)
    out = evaluate_coco(gt, [])
    assert out["AP"] == 0.0 and out["AR100"] == 0.0


def test_crowd_region_hit_is_ignored_by_hand():
    # one real object and one crowd region; a high-scoring detection inside the crowd must not be a FP
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "categories": [{"id": 7, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [100, 100, 90, 90], "area": 8100, "iscrowd": 1},
        ],
    }
    det = [{"image_id": 1, "boxes": np.array([[110, 110, 150, 150], [10, 10, 60, 60]], np.float32),
            "scores": np.array([0.9, 0.8]), "labels": np.array([0, 0])}]
    out = evaluate_coco(gt, det)
    assert out["AP"] == pytest.approx(1.0)
    # same detection with the region not marked crowd: a FP ranked first -> precision 0.5 everywhere
    gt2 = copy.deepcopy(gt)
    gt2["annotations"] = gt2["annotations"][:1]
    assert evaluate_coco(gt2, det)["AP50"] == pytest.approx(0.5, abs=1e-6)
    assert_parity(gt, det)


# ----------------------------------------------------------------------------------- inputs


def _dataset_from_gt(gt) -> DetectionDataset:
    cat_ids = sorted(c["id"] for c in gt["categories"])
    recs = []
    for im in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        b = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in anns], np.float32).reshape(-1, 4)
        recs.append(ImageRecord(path=im["file_name"], width=im["width"], height=im["height"], image_id=im["id"],
                                boxes=b, labels=np.array([cat_ids.index(a["category_id"]) for a in anns], np.int64),
                                iscrowd=np.array([bool(a["iscrowd"]) for a in anns])))
    return DetectionDataset(recs, [f"cls{c}" for c in cat_ids], cat_ids)


def test_dataset_gt_and_coco_results_and_torch_inputs_agree(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    gt = make_gt(rng, n_images=25, n_classes=4, crowd_frac=0.1)
    dets = make_dets(rng, gt)
    ref = evaluate_coco(gt, dets)
    ds = _dataset_from_gt(gt)
    # gt as DetectionDataset (no areas kept -> box area, float32 boxes): same numbers within float32 noise
    via_ds = evaluate_coco(ds, dets)
    # gt as a json path; detections as a COCO results list read back from save_coco_json
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(gt))
    rp = save_coco_json(dets, tmp_path / "res.json", cat_ids=ds.cat_ids)
    via_json = evaluate_coco(p, json.loads(rp.read_text()))
    # detections as torch tensors, as a dict keyed by image id
    tdets = {d["image_id"]: {k: torch.as_tensor(v) for k, v in d.items() if k != "image_id"} for d in dets}
    via_torch = evaluate_coco(gt, tdets)
    for k in METRIC_NAMES:
        assert via_json[k] == pytest.approx(ref[k], abs=1e-6)
        assert via_torch[k] == pytest.approx(ref[k], abs=1e-6)
        assert via_ds[k] == pytest.approx(ref[k], abs=1e-3)


def test_dataset_to_coco_maps_labels_back():
    ds = DetectionDataset(
        [ImageRecord("a.jpg", 100, 80, 5, boxes=np.array([[10, 20, 40, 60]], np.float32), labels=np.array([1]),
                     iscrowd=np.array([True]))],
        ["x", "y"], [3, 9])
    d = dataset_to_coco(ds)
    (a,) = d["annotations"]
    assert a["category_id"] == 9 and a["bbox"] == [10, 20, 30, 40] and a["area"] == 1200 and a["iscrowd"] == 1
    assert d["images"][0] == {"id": 5, "file_name": "a.jpg", "width": 100, "height": 80}
    res = to_coco_results([{"image_id": 5, "boxes": [[1, 2, 4, 8]], "scores": [0.5], "labels": [0]}], ds.cat_ids)
    assert res == [{"image_id": 5, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.5}]


def test_bad_inputs_raise():
    gt = make_gt(np.random.default_rng(8), n_images=3, n_classes=2)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(gt, [{"image_id": 999999, "boxes": [[0, 0, 5, 5]], "scores": [1.0], "labels": [0]}])
    with pytest.raises(ValueError, match="lengths differ"):
        evaluate_coco(gt, [{"image_id": 1000, "boxes": [[0, 0, 5, 5]], "scores": [1.0, 0.5], "labels": [0]}])
    with pytest.raises(ValueError, match="label 2 outside 0..1"):
        evaluate_coco(gt, [{"image_id": 1000, "boxes": [[0, 0, 5, 5]], "scores": [1.0], "labels": [2]}])


def test_segm_parity_with_pycocotools():
    from pycocotools import mask as pmask

    rng = np.random.default_rng(9)
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dets = []
    for i in range(8):
        W, H = 120, 100
        gt["images"].append({"id": i + 1, "width": W, "height": H})
        masks, scores, labels, boxes = [], [], [], []
        for j in range(3):
            x, y, w, h = rng.uniform(0, 60), rng.uniform(0, 50), rng.uniform(10, 55), rng.uniform(10, 45)
            poly = [x, y, x + w, y, x + w * 0.5, y + h]  # a triangle
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": j % 2 + 1,
                                      "bbox": [x, y, w, h], "area": w * h / 2, "iscrowd": 0, "segmentation": [poly]})
            m = np.zeros((H, W), np.uint8)
            x0, y0 = int(x + rng.integers(-3, 4)), int(y + rng.integers(-3, 4))
            m[max(y0, 0):int(y0 + h * 0.7), max(x0, 0):int(x0 + w * 0.8)] = 1
            masks.append(m), scores.append(rng.random()), labels.append(j % 2), boxes.append([x, y, x + w, y + h])
        dets.append({"image_id": i + 1, "boxes": np.array(boxes), "scores": np.array(scores),
                     "labels": np.array(labels), "masks": np.stack(masks).astype(bool)})
    ours = evaluate_coco(gt, dets, iou_type="segm")
    results = []
    for d in dets:
        for m, s, l, b in zip(d["masks"], d["scores"], d["labels"], d["boxes"]):
            rle = pmask.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": d["image_id"], "category_id": int(l) + 1, "segmentation": rle, "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        cg = pycoco.COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        ev = pycocoeval.COCOeval(cg, cg.loadRes(results), "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose([ours[k] for k in METRIC_NAMES], ev.stats[:12], atol=1e-6)
    assert ours["AP50"] > 0


def test_segm_with_an_instance_that_has_no_mask(caplog):
    """Two instances, one without a mask (dropped as malformed, or never given): it counts as an
    empty mask no detection reaches. One detection exactly on the other: recall 1/2 at precision
    1, so AP = 51 of COCO's 101 recall points = 51/101. A dataset with no masks at all gives box
    metrics only (and a warning) from an instance-segmentation model."""
    from rtmdet.families.segment import SEGMENT

    square = [10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]
    rec = ImageRecord.build("a.jpg", 64, 64, 1, [[10, 10, 40, 40], [5, 30, 60, 60]], [0, 0],
                            segmentations=[[square], []])
    ds = DetectionDataset([rec], ["a"], [1])
    gt = dataset_to_coco(ds)
    assert [a["segmentation"] for a in gt["annotations"]] == [[square], []]
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 10:40, 10:40] = True  # the square as COCO rasterises it
    dets = [{"image_id": 1, "boxes": np.array([[10.0, 10, 40, 40]]), "scores": np.array([0.9]),
             "labels": np.array([0]), "masks": mask}]
    segm = evaluate_coco(ds, dets, "segm")
    assert segm["AP"] == pytest.approx(51 / 101) and segm["AR100"] == pytest.approx(0.5)
    no_masks = DetectionDataset([ImageRecord.build("a.jpg", 64, 64, 1, [[10, 10, 40, 40]], [0])], ["a"], [1])
    metrics = SEGMENT.evaluate(no_masks, [SEGMENT.result_record(1, _one_mask_detection(mask))])
    assert list(metrics) == ["bbox"] and "no instance masks" in caplog.text
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert SEGMENT.summary(metrics)["mask_AP"] == -1.0


def _one_mask_detection(mask):
    import torch

    from rtmdet.detections import Detections
    return Detections(torch.tensor([[10.0, 10, 40, 40]]), torch.tensor([0.9]), torch.tensor([0]), ["a"],
                      masks=torch.as_tensor(mask), image_shape=(64, 64))


# ----------------------------------------------------------------------------------- reports, plots


def test_format_table_lists_classes_and_numbers():
    rng = np.random.default_rng(11)
    gt = make_gt(rng, n_images=10, n_classes=3)
    out = evaluate_coco(gt, make_dets(rng, gt))
    text = format_table(out)
    for c in gt["categories"]:
        assert c["name"] in text
    assert f"{out['AP']:.3f}" in text and "AP50" in text


def test_confusion_matrix_by_hand():
    ds = DetectionDataset(
        [ImageRecord("a.jpg", 100, 100, 1, boxes=np.array([[0, 0, 10, 10], [50, 50, 90, 90], [20, 0, 30, 10]],
                                                          np.float32),
                     labels=np.array([0, 1, 1]), iscrowd=np.zeros(3, bool))],
        ["a", "b"], [1, 2])
    dets = [{"image_id": 1,
             "boxes": np.array([[0, 0, 10, 10], [50, 50, 90, 90], [60, 0, 70, 10], [0, 0, 10, 11]], np.float32),
             "scores": np.array([0.9, 0.9, 0.9, 0.1]), "labels": np.array([0, 0, 1, 1])}]
    m = confusion_matrix(ds, dets, iou_thr=0.5, score_thr=0.25)
    expected = np.array([[1, 1, 0],   # pred a: true a (correct), true b (confused)
                         [0, 0, 1],   # pred b: a false positive on background
                         [0, 1, 0]])  # missed: the second b
    np.testing.assert_array_equal(m, expected)


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(12)
    gt = make_gt(rng, n_images=15, n_classes=3)
    dets = make_dets(rng, gt)
    out = evaluate_coco(gt, dets)
    p1 = plot_pr_curves(out, tmp_path / "pr.png")
    ds = _dataset_from_gt(gt)
    p2 = plot_confusion_matrix(confusion_matrix(ds, dets), ds.class_names, tmp_path / "cm.png")
    for p in (p1, p2):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
