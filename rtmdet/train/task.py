"""What differs between training a detector and an instance-segmentation model (RTMDet-Ins),
kept out of the training loop: whether the data carries masks, which loss runs, what the loss
log holds, and what validation reports.

* masks: `rtmdet-ins-*` models train on bitmap masks through the `with_mask=True` pipeline
  (the reference `rtmdet-ins_*` configs: `LoadAnnotations(with_mask=True)`, crops that recompute
  boxes from the cropped masks, `FilterAnnotations(min_gt_bbox_wh=(1, 1))`).
* loss: `rtmdet_ins_loss` (detection QFL + GIoU and the Dice mask loss on the same assignment).
* validation: bbox AP, AP50, AP75 as for detectors, plus `mask_AP`, `mask_AP50`, `mask_AP75`
  (COCO segm). The checkpoint fitness (what picks best.pth) of a mask model is its mask AP:
  the masks are what such a model is trained for and what the reference reports for it
  (bbox AP stays in the log). Detectors keep bbox AP.
"""
from __future__ import annotations

import torch

from ..config import model_config
from .losses import rtmdet_loss
from .losses_ins import rtmdet_ins_loss

DET_LOSS_KEYS = ("loss_cls", "loss_bbox")
INS_LOSS_KEYS = ("loss_cls", "loss_bbox", "loss_mask")
BOX_METRICS = ("AP", "AP50", "AP75")
MASK_METRICS = ("mask_AP", "mask_AP50", "mask_AP75")


def name_has_masks(model_name: str) -> bool:
    """Whether a preset name (`rtmdet-ins-tiny`, ...) is an instance-segmentation model."""
    try:
        return bool(model_config(model_name).with_mask)
    except KeyError:
        return model_name.lower().replace("_", "-").startswith("rtmdet-ins-")


def has_masks(model) -> bool:
    return bool(getattr(getattr(model, "cfg", None), "with_mask", False))


def loss_keys(with_mask: bool) -> tuple[str, ...]:
    """The loss parts logged per epoch (before the total `loss`)."""
    return INS_LOSS_KEYS if with_mask else DET_LOSS_KEYS


def float_outputs(out) -> tuple:
    """Head outputs in float32 (after autocast): lists stay lists, a tensor stays a tensor."""
    return tuple([t.float() for t in o] if isinstance(o, (list, tuple)) else o.float() for o in out)


def batch_loss(model, out, batch: dict, img_shape, device, *, det_loss=rtmdet_loss,
               ins_loss=rtmdet_ins_loss) -> tuple[torch.Tensor, dict]:
    """(objective, {part: detached scalar}) for one batch; the parts are `loss_keys(...)`.
    `det_loss` / `ins_loss` are the loss functions (injectable, e.g. to poison one in a test)."""
    boxes = [b.to(device) for b in batch["boxes"]]
    labels = [lb.to(device) for lb in batch["labels"]]
    strides = model.cfg.strides
    if has_masks(model):
        if "masks" not in batch:
            raise ValueError("a mask model needs a dataset built with with_mask=True")
        c = model.cfg
        ld = ins_loss(out, boxes, labels, [m.to(device) for m in batch["masks"]], img_shape,
                      strides=strides, num_prototypes=c.num_prototypes,
                      dyconv_channels=c.dyconv_channels, num_dyconvs=c.num_dyconvs)
    else:
        ld = det_loss(out, boxes, labels, img_shape, strides=strides)
    parts = {"loss_cls": sum(ld["loss_cls"]), "loss_bbox": sum(ld["loss_bbox"])}
    if "loss_mask" in ld:
        parts["loss_mask"] = ld["loss_mask"]
    return sum(parts.values()), {k: v.detach() for k, v in parts.items()}


def val_metrics(dataset, results: list[dict], with_mask: bool) -> dict:
    """{'AP', 'AP50', 'AP75'} (bbox) [+ {'mask_AP', 'mask_AP50', 'mask_AP75'} (segm)]."""
    from ..eval.coco import evaluate_coco
    res = evaluate_coco(dataset, results)
    metrics = {k: float(res[k]) for k in BOX_METRICS}
    if with_mask:
        seg = evaluate_coco(dataset, results, "segm")
        metrics.update({f"mask_{k}": float(seg[k]) for k in BOX_METRICS})
    return metrics


def fitness(metrics: dict) -> float:
    """What best.pth maximises: mask AP for mask models, bbox AP otherwise; -1 without metrics."""
    if not metrics:
        return -1.0
    return float(metrics.get("mask_AP", metrics.get("AP", -1.0)))


def metric_columns(metrics: dict, with_mask: bool) -> dict:
    """The extra results.csv columns of a mask model (blank on epochs without validation)."""
    return {k: metrics.get(k, "") for k in MASK_METRICS} if with_mask else {}
