"""The reference RTMDet training pipelines, per model (family and size) and stage.

Two recipes: ``"rtmdet"`` (configs/rtmdet: stage 1 CachedMosaic, RandomResize, RandomCrop, HSV,
flip, pad, CachedMixUp; stage 2 without the mixing) and ``"rotated"`` (mmrotate 1.x
configs/rotated_rtmdet/rotated_rtmdet_*-3x-dota.py, the RTMDet-R records: one pipeline for the
whole run, Resize(keep ratio) -> RandomFlip(0.75, horizontal/vertical/diagonal) ->
RandomRotate(0.5, +-180 deg, 90-degree steps for images holding storage tanks or roundabouts)
-> Pad; no mosaic, mixup, crop or colour jitter)."""
from __future__ import annotations

from dataclasses import dataclass

from ...presets import get_record, normalize_name

from ..dota import DOTA_V1_CLASSES
from .geometric import FilterAnnotations, Pad, RandomCrop, RandomFlip, RandomResize, RandomRotate, Resize
from .mixing import CachedMixUp, CachedMosaic
from .photometric import YOLOXHSVRandomAug
from .sample import PAD_VAL, Compose

__all__ = ["PipelineParams", "pipeline_params", "build_train_pipeline", "build_rotated_pipeline",
           "rect_labels"]


@dataclass(frozen=True)
class PipelineParams:
    """Training pipeline parameters of one reference config (configs/rtmdet/rtmdet_*_8xb32-300e_coco.py,
    rtmdet-ins_*_8xb32-300e_coco.py for the ``rtmdet-ins-*`` records of `rtmdet.presets`, and
    mmrotate's rotated_rtmdet_*-3x-dota.py for ``rtmdet-r-*``)."""

    resize_ratio_range: tuple[float, float] = (0.5, 2.0)
    mosaic_max_cached_images: int = 40
    mosaic_random_pop: bool = True
    mixup_max_cached_images: int = 20
    mixup_random_pop: bool = True
    mixup_prob: float = 1.0
    mixup_ratio_range: tuple[float, float] = (1.0, 1.0)
    stage1_resize_scale: int = 1280  # x img_scale / 640
    stage2_resize_scale: int = 640
    # RandomCrop: recompute each box from its target (the tight box of its mask) after the crop,
    # and keep crops that leave no box (the rtmdet-ins configs set both)
    recompute_bbox: bool = False
    allow_negative_crop: bool = False
    # stage 1 keeps a plain RandomCrop whatever the two above (rtmdet-ins_tiny's own stage 1)
    stage1_plain_crop: bool = False
    # FilterAnnotations(min_gt_bbox_wh) at the end of stage 1 and right after the crop in stage 2
    # (the rtmdet-ins configs: (1, 1)); None: no filter
    min_gt_bbox_wh: tuple[float, float] | None = None
    # "rtmdet" (two stages, mosaic/mixup) or "rotated" (the RTMDet-R pipeline, both stages)
    recipe: str = "rtmdet"
    # RandomFlip: each direction with prob / len(directions), no flip with 1 - prob
    flip_prob: float = 0.5
    flip_directions: tuple[str, ...] = ("horizontal",)
    # RandomRotate (rotated recipe); the rect classes turn by multiples of 90 degrees only
    # (by name: their labels come from the dataset's class names)
    rotate_prob: float = 0.5
    rotate_range: float = 180.0
    rect_obj_classes: tuple[str, ...] = ()

    @property
    def two_stage(self) -> bool:
        """Whether the recipe switches to a second pipeline for its last epochs (RTMDet does,
        RTMDet-R has one pipeline: its stage 2 is its stage 1)."""
        return self.recipe == "rtmdet"


def pipeline_params(size: str | dict | PipelineParams) -> PipelineParams:
    """Parameters by released model name (``rtmdet-s``, ``rtmdet-ins-tiny``, or the bare ``s``,
    ``ins-tiny``: the table is `rtmdet.presets`), or built from a dict, or passed through."""
    if isinstance(size, PipelineParams):
        return size
    if isinstance(size, dict):
        return PipelineParams(**size)
    key = normalize_name(size)
    name = key if key.startswith("rtmdet-") else f"rtmdet-{key}"
    return PipelineParams(**get_record(name).pipeline)


def rect_labels(classes: tuple[str, ...], class_names=None) -> tuple[int, ...] | None:
    """The labels of ``classes`` among ``class_names`` (DOTA v1.0's order when None); None
    when there are none (RandomRotate then never restricts the angle)."""
    names = list(DOTA_V1_CLASSES if class_names is None else class_names)
    labels = tuple(i for i, c in enumerate(names) if c in set(classes))
    return labels or None


def build_rotated_pipeline(p: PipelineParams, img_scale: int = 1024, class_names=None) -> Compose:
    """The RTMDet-R training pipeline (the same for both stages), see the module docstring."""
    sc = (img_scale, img_scale)
    return Compose([Resize(sc, keep_ratio=True), RandomFlip(p.flip_prob, p.flip_directions),
                    RandomRotate(p.rotate_prob, p.rotate_range, rect_labels(p.rect_obj_classes, class_names)),
                    Pad(sc, PAD_VAL)])


def build_train_pipeline(size: str | dict | PipelineParams, stage: int, img_scale: int = 640,
                         class_names=None) -> Compose:
    """The reference stage-1 (mosaic/mixup) or stage-2 training pipeline of a model (see
    `pipeline_params`): ``"ins-s"`` / ``"rtmdet-ins-s"`` give the RTMDet-Ins variant, with
    RandomCrop(recompute_bbox=True, allow_negative_crop=True) and FilterAnnotations(min_gt_bbox_wh=(1, 1))
    (after MixUp in stage 1, right after the crop in stage 2), as in configs/rtmdet/rtmdet-ins_*.py
    (except rtmdet-ins_tiny's stage 1, whose crop is a plain RandomCrop). A ``"rotated"`` recipe
    (``"r-tiny"``, ``"rtmdet-r-s"``) gives `build_rotated_pipeline` for either stage;
    ``class_names`` (the dataset's) tell which labels its RandomRotate treats as rect classes.
    """
    p = pipeline_params(size)
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    if p.recipe == "rotated":
        return build_rotated_pipeline(p, img_scale, class_names)
    if p.recipe != "rtmdet":
        raise ValueError(f"unknown pipeline recipe {p.recipe!r} (rtmdet or rotated)")
    sc = (img_scale, img_scale)
    crop = RandomCrop(sc, allow_negative_crop=p.allow_negative_crop, recompute_bbox=p.recompute_bbox)
    filt = [FilterAnnotations(p.min_gt_bbox_wh)] if p.min_gt_bbox_wh is not None else []
    tail = [YOLOXHSVRandomAug(), RandomFlip(p.flip_prob, p.flip_directions), Pad(sc, PAD_VAL)]
    if stage == 1:
        if p.stage1_plain_crop:
            crop = RandomCrop(sc)
        big = p.stage1_resize_scale * img_scale // 640
        ts = [CachedMosaic(sc, pad_val=114.0, max_cached_images=p.mosaic_max_cached_images,
                           random_pop=p.mosaic_random_pop),
              RandomResize((big, big), p.resize_ratio_range, keep_ratio=True), crop, *tail,
              CachedMixUp(sc, ratio_range=p.mixup_ratio_range, max_cached_images=p.mixup_max_cached_images,
                          random_pop=p.mixup_random_pop, pad_val=114.0, prob=p.mixup_prob), *filt]
    elif stage == 2:
        small = p.stage2_resize_scale * img_scale // 640
        ts = [RandomResize((small, small), p.resize_ratio_range, keep_ratio=True), crop, *filt, *tail]
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    return Compose(ts)
