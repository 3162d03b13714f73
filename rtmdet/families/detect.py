"""Object detection (RTMDet): axis-aligned boxes, QFL + GIoU, COCO bbox AP."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ..detections import Detections
from ..ops.boxes import all_priors, distance2bbox, feature_sizes, level_sizes
from ..ops.graph_nms import graph_multiclass_nms
from ..ops.nms import batched_nms
from ..ops.postprocess import RawDetections, postprocess_decoded_batch
from .base import TaskFamily, targets_on


class DetectFamily(TaskFamily):
    name = "detect"
    loss_keys = ("loss_cls", "loss_bbox")
    metric_keys = ("AP", "AP50", "AP75")
    outputs = ("boxes", "scores")
    nms_outputs = ("num_dets", "boxes", "scores", "labels")

    def build_head(self, cfg, bn):
        from ..models.head import RTMDetSepBNHead
        return RTMDetSepBNHead(cfg.num_classes, cfg.neck_out_channels, cfg.feat_channels,
                               cfg.stacked_convs, cfg.strides, cfg.share_conv, cfg.exp_on_reg, **bn)

    def owns(self, state_dict) -> bool:
        return "bbox_head.rtm_reg.0.weight" in state_dict

    # ------------------------------------------------------------------ inference
    def decode(self, head_out, input_hw, cfg):
        """boxes (B,N,4) xyxy in input pixels clamped to the input, scores (B,N,C) sigmoid;
        N runs over the levels, row-major within a level (the reference prior order)."""
        cls_scores, bbox_preds = head_out[0], head_out[1]
        priors = all_priors(feature_sizes(cls_scores), cfg.strides, cls_scores[0].device)
        # all levels at once: the same arithmetic per element, a third of the kernels
        reg = torch.cat([r.float().permute(0, 2, 3, 1).flatten(1, 2) for r in bbox_preds], 1)
        boxes = distance2bbox(priors, reg, max_shape=input_hw)
        scores = [c.float().permute(0, 2, 3, 1).flatten(1, 2).sigmoid() for c in cls_scores]
        # "score_levels" feeds an in-graph NMS (per-level top-k); it is not a graph output
        return {"boxes": boxes, "scores": torch.cat(scores, 1), "score_levels": scores}

    def select(self, outs, metas, test_cfg, cfg) -> list[RawDetections]:
        """The reference post-processing of every image of a decoded batch."""
        n = len(metas)  # a static-batch graph may return padding images after them
        sizes = level_sizes(*metas[0].img_shape, cfg.strides)
        return postprocess_decoded_batch(outs["boxes"][:n].float(), outs["scores"][:n].float(), sizes,
                                         [m.scale_factor for m in metas], test_cfg)

    def postprocess(self, outs, metas, test_cfg, cfg, class_names):
        return [Detections(r.boxes, r.scores, r.labels, list(class_names), image_shape=m.ori_shape)
                for r, m in zip(self.select(outs, metas, test_cfg, cfg), metas)]

    def kept_from_graph(self, outs, i: int, meta, test_cfg):
        """Image `i` of an in-graph-NMS output: (index of kept rows, boxes in original pixels)."""
        n = int(outs["num_dets"][i].reshape(-1)[0])
        scores = outs["scores"][i, :n].float()
        keep = (scores > test_cfg.score_thr).nonzero().view(-1)[: test_cfg.max_per_img]
        sw, sh = meta.scale_factor
        boxes = outs["boxes"][i, :n].float()[keep]
        return keep, boxes * boxes.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh])

    def postprocess_nms(self, outs, metas, test_cfg, cfg, class_names):
        results = []
        for i, meta in enumerate(metas):
            keep, boxes = self.kept_from_graph(outs, i, meta, test_cfg)
            results.append(Detections(boxes, outs["scores"][i][keep].float(),
                                      outs["labels"][i][keep].long(), list(class_names),
                                      image_shape=meta.ori_shape))
        return results

    def export_nms(self, decoded, cfg, knobs):
        num_dets, boxes, scores, labels, _ = graph_multiclass_nms(decoded["boxes"], decoded["score_levels"],
                                                                  **knobs)
        return num_dets, boxes, scores, labels

    def merge(self, dets, offsets, image_shape, test_cfg):
        boxes, scores, labels, _ = self.merge_boxes(dets, offsets, image_shape, test_cfg)
        return Detections(boxes, scores, labels, list(dets[0].class_names),
                          image_shape=tuple(image_shape))

    def merge_boxes(self, dets, offsets, image_shape, test_cfg):
        """The box part of `merge`: boxes shifted by their patch's origin and clipped to the
        image (a box wholly in a patch's padding is dropped), class-aware NMS, `max_per_img`.
        Returns (boxes, scores, labels, (patch index, row in that patch) of each kept)."""
        h, w = image_shape
        boxes = torch.cat([d.boxes.float() + d.boxes.new_tensor([x, y, x, y], dtype=torch.float32)
                           for d, (x, y) in zip(dets, np.asarray(offsets).tolist())])
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
        scores = torch.cat([d.scores.float() for d in dets])
        labels = torch.cat([d.labels.long() for d in dets])
        patch = torch.cat([torch.full((len(d),), k, dtype=torch.long) for k, d in enumerate(dets)])
        row = torch.cat([torch.arange(len(d)) for d in dets])
        ok = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).cpu()
        boxes, scores, labels, patch, row = (t[ok.to(t.device)] for t in (boxes, scores, labels, patch, row))
        keep = batched_nms(boxes, scores, labels, test_cfg.nms_iou)[: test_cfg.max_per_img]
        k = keep.cpu()
        return boxes[keep], scores[keep], labels[keep], (patch[k], row[k])

    # ------------------------------------------------------------------ training
    def loss(self, head_out, batch, img_shape, cfg, device):
        from ..train.losses import rtmdet_loss
        boxes, labels = targets_on(batch["boxes"], device), targets_on(batch["labels"], device)
        ld = rtmdet_loss(head_out, boxes, labels, img_shape, strides=cfg.strides)
        return {"loss_cls": sum(ld["loss_cls"]), "loss_bbox": sum(ld["loss_bbox"])}

    # ------------------------------------------------------------------ evaluation
    def result_record(self, image_id, det):
        n = det.numpy()
        return {"image_id": image_id, "boxes": n.boxes, "scores": n.scores, "labels": n.labels}

    def empty_record(self, image_id):
        return {"image_id": image_id, "boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                "labels": np.zeros(0, np.int64)}

    def evaluate(self, dataset, results):
        from ..eval.coco import evaluate_coco
        return {"bbox": evaluate_coco(dataset, results, "bbox")}

    def format_metrics(self, metrics, class_names):
        """The COCO table of each kind (bbox, then segm), per class for the first."""
        from ..eval.coco import format_table
        return "\n".join(("" if i == 0 else f"{kind}:\n") + format_table(m, per_class=i == 0)
                         for i, (kind, m) in enumerate(metrics.items()))

    def save_results(self, dataset, results, save_dir):
        """COCO results json (`detections.json`, category ids of the dataset)."""
        from pathlib import Path

        from ..eval.coco import save_coco_json
        return save_coco_json(results, Path(save_dir) / "detections.json", cat_ids=dataset.cat_ids)

    def save_plots(self, metrics, dataset, results, save_dir):
        """PR curves (of the first metric kind) and the confusion matrix."""
        from pathlib import Path

        from ..eval.coco import confusion_matrix
        from ..eval.plots import plot_confusion_matrix, plot_pr_curves
        save_dir = Path(save_dir)
        return [plot_pr_curves(next(iter(metrics.values())), save_dir / "pr_curves.png"),
                plot_confusion_matrix(confusion_matrix(dataset, results), dataset.class_names,
                                      save_dir / "confusion_matrix.png")]

    def summary(self, metrics):
        return {k: float(metrics["bbox"][k]) for k in ("AP", "AP50", "AP75")}

    def fitness(self, summary: Mapping[str, float]) -> float:
        return float(summary.get("AP", -1.0)) if summary else -1.0


DETECT = DetectFamily()
