"""The reference RTMDet training pipelines, per model size and stage."""
from __future__ import annotations

from dataclasses import dataclass

from .geometric import FilterAnnotations, Pad, RandomCrop, RandomFlip, RandomResize
from .mixing import CachedMixUp, CachedMosaic
from .photometric import YOLOXHSVRandomAug
from .sample import PAD_VAL, Compose

__all__ = ["PipelineParams", "PIPELINE_PARAMS", "pipeline_params", "build_train_pipeline"]


@dataclass(frozen=True)
class PipelineParams:
    """Per-model-size training pipeline parameters (from configs/rtmdet/rtmdet_*_8xb32-300e_coco.py)."""

    resize_ratio_range: tuple[float, float]
    mosaic_max_cached_images: int = 40
    mosaic_random_pop: bool = True
    mixup_max_cached_images: int = 20
    mixup_random_pop: bool = True
    mixup_prob: float = 1.0
    mixup_ratio_range: tuple[float, float] = (1.0, 1.0)
    stage1_resize_scale: int = 1280  # x img_scale / 640
    stage2_resize_scale: int = 640
    # rtmdet-ins_tiny's own stage-1 pipeline keeps a plain RandomCrop (no recompute_bbox, no
    # negative crops); every other ins config, and every ins stage 2, recomputes boxes from masks
    ins_stage1_recompute_bbox: bool = True


PIPELINE_PARAMS: dict[str, PipelineParams] = {
    "tiny": PipelineParams((0.5, 2.0), mosaic_max_cached_images=20, mosaic_random_pop=False,
                           mixup_max_cached_images=10, mixup_random_pop=False, mixup_prob=0.5,
                           ins_stage1_recompute_bbox=False),
    "s": PipelineParams((0.5, 2.0)),
    "m": PipelineParams((0.1, 2.0)),
    "l": PipelineParams((0.1, 2.0)),
    "x": PipelineParams((0.1, 2.0)),
}


def pipeline_params(size: str | dict | PipelineParams) -> PipelineParams:
    if isinstance(size, PipelineParams):
        return size
    if isinstance(size, dict):
        return PipelineParams(**size)
    key = size.lower().removeprefix("rtmdet-").removeprefix("ins-").removeprefix("rtmdet_")
    if key not in PIPELINE_PARAMS:
        raise KeyError(f"unknown model size {size!r}; expected one of {sorted(PIPELINE_PARAMS)}")
    return PIPELINE_PARAMS[key]


def build_train_pipeline(size: str | dict | PipelineParams, stage: int, img_scale: int = 640,
                         with_mask: bool = False) -> Compose:
    """The reference stage-1 (mosaic/mixup) or stage-2 training pipeline for a model size.

    ``with_mask=True`` gives the RTMDet-Ins variant: RandomCrop(recompute_bbox=True,
    allow_negative_crop=True) and FilterAnnotations(min_gt_bbox_wh=(1, 1)) (after MixUp in
    stage 1, right after the crop in stage 2), as in configs/rtmdet/rtmdet-ins_*.py (except
    rtmdet-ins_tiny's stage 1, whose crop is a plain RandomCrop: see PipelineParams).
    """
    p = pipeline_params(size)
    sc = (img_scale, img_scale)
    crop = RandomCrop(sc, allow_negative_crop=with_mask, recompute_bbox=with_mask)
    tail = [YOLOXHSVRandomAug(), RandomFlip(0.5), Pad(sc, PAD_VAL)]
    if stage == 1:
        if with_mask and not p.ins_stage1_recompute_bbox:
            crop = RandomCrop(sc)
        big = p.stage1_resize_scale * img_scale // 640
        ts = [CachedMosaic(sc, pad_val=114.0, max_cached_images=p.mosaic_max_cached_images,
                           random_pop=p.mosaic_random_pop),
              RandomResize((big, big), p.resize_ratio_range, keep_ratio=True), crop, *tail,
              CachedMixUp(sc, ratio_range=p.mixup_ratio_range, max_cached_images=p.mixup_max_cached_images,
                          random_pop=p.mixup_random_pop, pad_val=114.0, prob=p.mixup_prob)]
        if with_mask:
            ts.append(FilterAnnotations((1, 1)))
    elif stage == 2:
        small = p.stage2_resize_scale * img_scale // 640
        ts = [RandomResize((small, small), p.resize_ratio_range, keep_ratio=True), crop]
        if with_mask:
            ts.append(FilterAnnotations((1, 1)))
        ts += tail
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    return Compose(ts)
