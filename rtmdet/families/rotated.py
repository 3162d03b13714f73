"""Rotated-box detection (RTMDet-R, mmrotate 1.x): (cx, cy, w, h, theta) boxes, DOTA classes.

Inference follows mmrotate's `RotatedRTMDetHead.predict_by_feat` step by step: per level the
(prior, class) pairs with sigmoid score > score_thr, the best nms_pre of them (multi-label: a
prior appears once per passing class); decode with `distance2obb` (le90: theta wrapped into
[-pi/2, pi/2), w/h not swapped); `RotatedBoxes.rescale_` to the original image; keep w > 0 and
h > 0 (min_bbox_size); mmcv `batched_nms` with `nms_rotated` (class offsets on the centres);
the first max_per_img by score."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ..detections import Detections
from ..ops.boxes import all_priors, feature_sizes, grid_priors, level_sizes
from ..ops.postprocess import select_topk
from ..ops.rotated import batched_nms_rotated, distance2obb, obb2poly, rescale_rotated
from .base import TaskFamily, targets_on


def rotated_hull(rboxes: torch.Tensor) -> torch.Tensor:
    """(N,5) rotated boxes -> (N,4) xyxy axis-aligned boxes around their corners."""
    corners = obb2poly(rboxes)
    return torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)


class RotatedFamily(TaskFamily):
    name = "rotated"
    loss_keys = ("loss_cls", "loss_bbox")
    metric_keys = ("mAP50",)
    targets = ("rboxes",)  # (n,5) rotated boxes from the records' polygons (rtmdet.data.targets)
    dataset_kind = "rotated"  # DOTA txt or YOLO-OBB (rtmdet.data.datasets.load_dataset)
    outputs = ("boxes", "scores")

    @property
    def default_class_names(self) -> tuple[str, ...]:
        """The classes of the released RTMDet-R models (DOTA v1.0, label = index)."""
        from ..data.dota import DOTA_V1_CLASSES
        return DOTA_V1_CLASSES

    # ------------------------------------------------------------------ model
    def build_head(self, cfg, bn):
        from ..models.head_rotated import RotatedRTMDetSepBNHead
        return RotatedRTMDetSepBNHead(cfg.num_classes, cfg.neck_out_channels, cfg.feat_channels,
                                      cfg.stacked_convs, cfg.strides, cfg.share_conv,
                                      cfg.exp_on_reg, **bn)

    def owns(self, state_dict) -> bool:
        return "bbox_head.rtm_ang.0.weight" in state_dict

    # ------------------------------------------------------------------ inference
    def decode(self, head_out, input_hw, cfg):
        """boxes (B,N,5) (cx, cy, w, h, theta) in input pixels (not clipped), scores (B,N,C)
        sigmoid; N runs over the levels, row-major within a level (the reference prior order)."""
        cls_scores, bbox_preds, angle_preds = head_out[0], head_out[1], head_out[2]
        sizes = feature_sizes(cls_scores)
        if torch.jit.is_tracing():  # sizes are tensors: the export keeps dynamic shapes
            priors = grid_priors(sizes, cfg.strides, torch.float32, cls_scores[0].device)
        else:  # cached; the boxes stay per level (the same float paths as the reference's)
            priors = all_priors(sizes, cfg.strides, cls_scores[0].device).split([h * w for h, w in sizes])
        boxes = []
        for p, r, a in zip(priors, bbox_preds, angle_preds):
            dist = torch.cat([r.float(), a.float()], 1).permute(0, 2, 3, 1).flatten(1, 2)
            boxes.append(distance2obb(p, dist, cfg.angle_version))
        scores = [c.float().permute(0, 2, 3, 1).flatten(1, 2).sigmoid() for c in cls_scores]
        return {"boxes": torch.cat(boxes, 1), "scores": torch.cat(scores, 1), "score_levels": scores}

    def select(self, boxes: torch.Tensor, scores: torch.Tensor, sizes, scale_factor, test_cfg):
        """One image: decoded boxes (N,5) and scores (N,C) in input pixels -> kept (rotated boxes
        in original pixels, scores, labels), the reference's order (score descending)."""
        sel_boxes, sel_scores, sel_labels = [], [], []
        for b, s in zip(boxes.split(list(sizes)), scores.split(list(sizes))):
            vals, keep, labels = select_topk(s, test_cfg.score_thr, test_cfg.nms_pre)
            sel_boxes.append(b[keep])
            sel_scores.append(vals)
            sel_labels.append(labels)
        boxes, scores, labels = torch.cat(sel_boxes), torch.cat(sel_scores), torch.cat(sel_labels)
        sw, sh = scale_factor
        boxes = rescale_rotated(boxes, 1 / sw, 1 / sh)
        if test_cfg.min_bbox_size >= 0:
            ok = (boxes[:, 2] > test_cfg.min_bbox_size) & (boxes[:, 3] > test_cfg.min_bbox_size)
            if not bool(ok.all()):
                boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
        keep = batched_nms_rotated(boxes, scores, labels, test_cfg.nms_iou)[: test_cfg.max_per_img]
        return boxes[keep], scores[keep], labels[keep]

    def postprocess(self, outs, metas, test_cfg, cfg, class_names):
        results = []
        for i, meta in enumerate(metas):
            sizes = level_sizes(*meta.img_shape, cfg.strides)
            rboxes, scores, labels = self.select(outs["boxes"][i].float(), outs["scores"][i].float(),
                                                 sizes, meta.scale_factor, test_cfg)
            results.append(Detections(rotated_hull(rboxes), scores, labels, list(class_names),
                                      image_shape=meta.ori_shape, rboxes=rboxes))
        return results

    def postprocess_nms(self, outs, metas, test_cfg, cfg, class_names):
        raise NotImplementedError("RTMDet-R graphs with NMS inside are not supported yet "
                                  "(export without NMS: rotated NMS runs after the graph)")

    def export_nms(self, decoded, cfg, knobs):
        raise NotImplementedError("in-graph rotated NMS is not implemented (no exact rotated NMS "
                                  "with standard ONNX ops); export without NMS")

    def merge(self, dets, offsets, image_shape, test_cfg):
        """Centres shifted by their patch's origin (boxes are not clipped, as the reference
        leaves them), mmcv `batched_nms` with `nms_rotated` at `nms_iou` (as mmrotate merges
        patch results), `max_per_img`."""
        rboxes = torch.cat([d.rboxes.float() + d.rboxes.new_tensor([x, y, 0, 0, 0], dtype=torch.float32)
                            for d, (x, y) in zip(dets, np.asarray(offsets).tolist())])
        scores = torch.cat([d.scores.float() for d in dets])
        labels = torch.cat([d.labels.long() for d in dets])
        keep = batched_nms_rotated(rboxes, scores, labels, test_cfg.nms_iou)[: test_cfg.max_per_img]
        return Detections(rotated_hull(rboxes[keep]), scores[keep], labels[keep],
                          list(dets[0].class_names), image_shape=tuple(image_shape),
                          rboxes=rboxes[keep])

    # ------------------------------------------------------------------ training
    def loss(self, head_out, batch, img_shape, cfg, device):
        """QFL + rotated IoU loss (`rtmdet.train.losses_rotated`) against `batch["rboxes"]`."""
        from ..train.losses_rotated import rotated_rtmdet_loss
        if "rboxes" not in batch:
            raise ValueError("a rotated-box model needs training data with rotated boxes "
                             "(a DOTA or YOLO-OBB dataset)")
        ld = rotated_rtmdet_loss(head_out, targets_on(batch["rboxes"], device),
                                 targets_on(batch["labels"], device), img_shape,
                                 strides=cfg.strides, angle_version=cfg.angle_version)
        return {"loss_cls": sum(ld["loss_cls"]), "loss_bbox": sum(ld["loss_bbox"])}

    # ------------------------------------------------------------------ evaluation
    def result_record(self, image_id, det):
        n = det.numpy()
        return {"image_id": image_id, "boxes": n.boxes, "rboxes": n.rboxes, "scores": n.scores,
                "labels": n.labels}

    def empty_record(self, image_id):
        return {"image_id": image_id, "boxes": np.zeros((0, 4)), "rboxes": np.zeros((0, 5)),
                "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}

    def evaluate(self, dataset, results):
        """{"rbox": DOTA mAP at IoU 0.5 (`rtmdet.eval.dota.evaluate_rotated`, mmrotate's
        DOTAMetric: 11-point AP)}. Ground truth: each record's polygons as le90 boxes; no gt is
        ignored as difficult (mmrotate's DOTADataset flags none). An image without a result
        counts as one without detections."""
        from ..eval.dota import evaluate_rotated
        from ..ops.polygons import poly2obb_le90
        by_id = {r["image_id"]: r for r in results}
        gts, dets = [], []
        for rec in dataset.records:
            if rec.polygons is None:
                raise ValueError(f"{rec.path}: rotated evaluation needs polygon annotations "
                                 "(a DOTA or YOLO-OBB dataset)")
            polys = np.asarray(rec.polygons, np.float32).reshape(-1, 8)
            gts.append({"boxes": poly2obb_le90(polys) if len(polys) else np.zeros((0, 5), np.float32),
                        "labels": np.asarray(rec.labels)})
            r = by_id.get(rec.image_id) or self.empty_record(rec.image_id)
            dets.append({"boxes": r["rboxes"], "scores": r["scores"], "labels": r["labels"]})
        res = evaluate_rotated(gts, dets, dataset.num_classes, iou_thrs=(0.5,))
        res["num_images"] = len(gts)
        return {"rbox": res}

    def format_metrics(self, metrics, class_names):
        """The DOTA table: per class gts, detections, recall and AP at IoU 0.5, then mAP."""
        from ..eval.dota import format_table
        m = metrics["rbox"]
        n_img = m.get("num_images")
        head = "DOTA rotated-box mAP (VOC 11-point AP, rotated IoU" + \
            (f"; {n_img} images)" if n_img is not None else ")")
        return head + "\n" + format_table(m, class_names)

    def save_results(self, dataset, results, save_dir):
        """`detections.json`: one entry per detection with image_id, file_name, category_id (the
        dataset's), score, rbox (cx, cy, w, h, theta) and poly (DOTA's x1 y1 ... x4 y4)."""
        import json
        import os
        from pathlib import Path

        from ..ops.rotated import obb2poly
        names = {r.image_id: Path(r.path).name for r in dataset.records}
        out = []
        for r in results:
            rb = np.asarray(r["rboxes"], np.float64).reshape(-1, 5)
            polys = obb2poly(torch.from_numpy(rb)).reshape(-1, 8).tolist()
            for b, poly, sc, lb in zip(rb.tolist(), polys, np.asarray(r["scores"]).tolist(),
                                       np.asarray(r["labels"]).tolist()):
                out.append({"image_id": int(r["image_id"]), "file_name": names.get(r["image_id"]),
                            "category_id": int(dataset.cat_ids[int(lb)]), "score": float(sc),
                            "rbox": [round(v, 3) for v in b[:4]] + [round(b[4], 6)],
                            "poly": [round(v, 3) for v in poly]})
        path = Path(save_dir) / "detections.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)
        return path

    def summary(self, metrics):
        return {"mAP50": float(metrics["rbox"]["AP50"])}

    def fitness(self, summary: Mapping[str, float]) -> float:
        return float(summary.get("mAP50", -1.0)) if summary else -1.0


ROTATED = RotatedFamily()
