"""Instance segmentation (RTMDet-Ins): detection plus per-instance dynamic-conv masks, Dice loss,
COCO bbox + segm AP (best.pth follows mask AP: masks are what such a model is trained for)."""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..detections import Detections
from ..ops.boxes import all_priors, feature_sizes, level_shapes
from ..ops.graph_nms import graph_multiclass_nms
from ..ops.instance_masks import (MASK_LOSS_STRIDE, batched_dynamic_mask_logits,
                                  dynamic_mask_logits, dynamic_param_sizes, logits_to_masks)
from .base import targets_on
from .detect import DetectFamily

log = logging.getLogger("rtmdet")

MASK_METRICS = ("mask_AP", "mask_AP50", "mask_AP75")


def _per_image_masks(feat: torch.Tensor) -> bool:
    """Whether mask logits are computed image by image (CPU) or for the batch at once."""
    return feat.device.type == "cpu"


def _kept_priors(meta, strides, inds, device):
    """(x, y, stride, stride) of the kept priors of an input of `meta.img_shape`."""
    sizes = level_shapes(*meta.img_shape, strides)
    return all_priors(sizes, strides, device, with_stride=True)[inds]


class SegmentFamily(DetectFamily):
    name = "segment"
    loss_keys = ("loss_cls", "loss_bbox", "loss_mask")
    metric_keys = ("AP", "AP50", "AP75", *MASK_METRICS)
    targets = ("masks",)
    target_steps = (("masks", MASK_LOSS_STRIDE),)  # the mask loss reads gt masks at [2::4, 2::4]
    outputs = ("boxes", "scores", "kernels", "mask_feat")
    nms_outputs = ("num_dets", "boxes", "scores", "labels", "masks")

    def build_head(self, cfg, bn):
        from ..models.head_ins import RTMDetInsSepBNHead
        return RTMDetInsSepBNHead(cfg.num_classes, cfg.neck_out_channels, cfg.feat_channels,
                                  cfg.stacked_convs, cfg.strides, cfg.share_conv,
                                  cfg.num_prototypes, cfg.dyconv_channels, cfg.num_dyconvs, **bn)

    def owns(self, state_dict) -> bool:
        return "bbox_head.rtm_kernel.0.weight" in state_dict

    # ------------------------------------------------------------------ inference
    def decode(self, head_out, input_hw, cfg):
        """The detection outputs plus kernels (B,N,params) per prior and mask_feat (B,P,h,w)."""
        out = super().decode(head_out, input_hw, cfg)
        out["kernels"] = torch.cat([k.float().permute(0, 2, 3, 1).flatten(1, 2) for k in head_out[2]], 1)
        out["mask_feat"] = head_out[3].float()
        out["priors"] = all_priors(feature_sizes(head_out[0]), cfg.strides, out["kernels"].device,
                                   with_stride=True)
        return out

    def postprocess(self, outs, metas, test_cfg, cfg, class_names):
        raws = self.select(outs, metas, test_cfg, cfg)
        results = []
        for raw, meta, logits in zip(raws, metas, self.mask_logits(outs, metas, raws, cfg)):
            masks = logits_to_masks(logits, meta.ori_shape, meta.scale_factor, cfg.strides[0],
                                    test_cfg.mask_thr)
            results.append(Detections(raw.boxes, raw.scores, raw.labels, list(class_names),
                                      masks=masks, image_shape=meta.ori_shape))
        return results

    def mask_logits(self, outs, metas, raws, cfg) -> list[torch.Tensor]:
        """Per image the stride-8 mask logits (n,h,w) of its kept detections: image by image on
        the CPU, the whole batch in one padded dynamic conv elsewhere (a GPU would launch its
        ~15 kernels per image)."""
        wn, bn = dynamic_param_sizes(cfg.num_prototypes, cfg.dyconv_channels, cfg.num_dyconvs)
        feat, kernels = outs["mask_feat"][:len(raws)].float(), outs["kernels"]
        priors = _kept_priors(metas[0], cfg.strides, slice(None), feat.device)  # the batch's input
        if _per_image_masks(feat) or len(raws) == 1:
            return [dynamic_mask_logits(feat[i], kernels[i][r.prior_inds].float(),
                                        priors[r.prior_inds], wn, bn, cfg.dyconv_channels,
                                        cfg.strides[0]) for i, r in enumerate(raws)]
        sizes = [len(r.prior_inds) for r in raws]
        idx = torch.nn.utils.rnn.pad_sequence([r.prior_inds for r in raws], batch_first=True)
        kern = kernels[:len(raws)].gather(1, idx[..., None].expand(-1, -1, kernels.shape[-1]))
        logits = batched_dynamic_mask_logits(feat, kern.float(), priors[idx], wn, bn,
                                             cfg.dyconv_channels, cfg.strides[0])
        return [logits[i, :n] for i, n in enumerate(sizes)]

    def postprocess_nms(self, outs, metas, test_cfg, cfg, class_names):
        results = super().postprocess_nms(outs, metas, test_cfg, cfg, class_names)
        for i, (det, meta) in enumerate(zip(results, metas)):
            keep, _ = self.kept_from_graph(outs, i, meta, test_cfg)
            n = int(outs["num_dets"][i].reshape(-1)[0])
            det.masks = logits_to_masks(outs["masks"][i, :n][keep].float(), meta.ori_shape,
                                        meta.scale_factor, cfg.strides[0], test_cfg.mask_thr)
        return results

    def export_nms(self, decoded, cfg, knobs):
        """Stride-8 mask logits (B,K,h,w) of the kept detections (zeros in padded rows)."""
        num_dets, boxes, scores, labels, box_idx = graph_multiclass_nms(
            decoded["boxes"], decoded["score_levels"], **knobs)
        kernels, priors = decoded["kernels"], decoded["priors"]
        k = kernels.gather(1, box_idx.unsqueeze(-1).expand(-1, -1, kernels.shape[-1]))
        pri = priors.index_select(0, box_idx.flatten()).reshape(box_idx.shape + (4,))
        wn, bn = dynamic_param_sizes(cfg.num_prototypes, cfg.dyconv_channels, cfg.num_dyconvs)
        logits = batched_dynamic_mask_logits(decoded["mask_feat"], k, pri, wn, bn,
                                             cfg.dyconv_channels, cfg.strides[0])
        valid = (labels >= 0)[..., None, None]
        return num_dets, boxes, scores, labels, torch.where(valid, logits, torch.zeros_like(logits))

    def merge(self, dets, offsets, image_shape, test_cfg):
        """`DetectFamily.merge`, and each kept detection's patch mask pasted into the image."""
        boxes, scores, labels, (patch, row) = self.merge_boxes(dets, offsets, image_shape, test_cfg)
        h, w = (int(v) for v in image_shape)
        masks = torch.zeros((len(scores), h, w), dtype=torch.bool, device=scores.device)
        origins = np.asarray(offsets).tolist()
        for n, (p, r) in enumerate(zip(patch.tolist(), row.tolist())):
            x, y = origins[p]
            m = dets[p].masks[r]
            mh, mw = min(m.shape[0], h - y), min(m.shape[1], w - x)
            masks[n, y:y + mh, x:x + mw] = torch.as_tensor(m[:mh, :mw]).to(masks.device)
        return Detections(boxes, scores, labels, list(dets[0].class_names), masks=masks,
                          image_shape=(h, w))

    # ------------------------------------------------------------------ training
    def loss(self, head_out, batch, img_shape, cfg, device):
        from ..train.losses_ins import rtmdet_ins_loss
        if "masks" not in batch:
            raise ValueError("an instance-segmentation model needs training data with masks")
        ld = rtmdet_ins_loss(head_out, targets_on(batch["boxes"], device),
                             targets_on(batch["labels"], device),
                             targets_on(batch["masks"], device), img_shape,
                             strides=cfg.strides, num_prototypes=cfg.num_prototypes,
                             dyconv_channels=cfg.dyconv_channels, num_dyconvs=cfg.num_dyconvs)
        return {"loss_cls": sum(ld["loss_cls"]), "loss_bbox": sum(ld["loss_bbox"]),
                "loss_mask": ld["loss_mask"]}

    # ------------------------------------------------------------------ evaluation
    def result_record(self, image_id, det):
        rec = super().result_record(image_id, det)
        rec["segmentations"] = det.masks_rle()
        return rec

    def empty_record(self, image_id):
        return {**super().empty_record(image_id), "segmentations": []}

    def evaluate(self, dataset, results):
        """bbox and segm metrics; bbox only on a dataset without masks (boxes-only labels)."""
        from ..eval.coco import evaluate_coco
        metrics = super().evaluate(dataset, results)
        if all(r.segmentations is None for r in dataset.records):
            log.warning("the dataset has no instance masks: mask AP not computed (box AP only)")
            return metrics
        return {**metrics, "segm": evaluate_coco(dataset, results, "segm")}

    def summary(self, metrics):
        out = super().summary(metrics)
        segm = metrics.get("segm", {})  # -1 as COCO writes an undefined metric
        out.update({f"mask_{k}": float(segm.get(k, -1.0)) for k in ("AP", "AP50", "AP75")})
        return out

    def fitness(self, summary):
        return float(summary.get("mask_AP", -1.0)) if summary else -1.0


SEGMENT = SegmentFamily()
