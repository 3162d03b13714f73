"""Object detection (RTMDet): axis-aligned boxes, QFL + GIoU, COCO bbox AP."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..detections import Detections
from ..ops.boxes import distance2bbox, feature_sizes, grid_priors, level_sizes
from ..ops.graph_nms import graph_multiclass_nms
from ..ops.postprocess import RawDetections, postprocess_decoded
from .base import TaskFamily


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
        priors = grid_priors(feature_sizes(cls_scores), cfg.strides, torch.float32,
                             cls_scores[0].device)
        boxes = [distance2bbox(p, r.float().permute(0, 2, 3, 1).flatten(1, 2), max_shape=input_hw)
                 for p, r in zip(priors, bbox_preds)]
        scores = [c.float().permute(0, 2, 3, 1).flatten(1, 2).sigmoid() for c in cls_scores]
        # "score_levels" feeds an in-graph NMS (per-level top-k); it is not a graph output
        return {"boxes": torch.cat(boxes, 1), "scores": torch.cat(scores, 1), "score_levels": scores}

    def select(self, outs, metas, test_cfg, cfg) -> list[RawDetections]:
        """The reference post-processing of every image of a decoded batch."""
        raws = []
        for i, meta in enumerate(metas):
            sizes = level_sizes(*meta.img_shape, cfg.strides)
            raws.append(postprocess_decoded(outs["boxes"][i].float(), outs["scores"][i].float(),
                                            sizes, meta.scale_factor, test_cfg))
        return raws

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

    # ------------------------------------------------------------------ training
    def loss(self, head_out, batch, img_shape, cfg, device):
        from ..train.losses import rtmdet_loss
        boxes = [b.to(device) for b in batch["boxes"]]
        labels = [lb.to(device) for lb in batch["labels"]]
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

    def summary(self, metrics):
        return {k: float(metrics["bbox"][k]) for k in ("AP", "AP50", "AP75")}

    def fitness(self, summary: Mapping[str, float]) -> float:
        return float(summary.get("AP", -1.0)) if summary else -1.0


DETECT = DetectFamily()
