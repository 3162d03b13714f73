"""Every released model in one table: family, architecture factors, weights, published figures,
test settings, normalisation and training-recipe parameters (as timm's `default_cfgs`).

Nothing here imports torch: the CLI lists the zoo and validates names without loading a model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config import MEAN_BGR, STD_BGR, ModelConfig, TestConfig

_MM = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet"
_MMR = "https://download.openmmlab.com/mmrotate/v1.0/rotated_rtmdet"

# architecture factors per size (configs/rtmdet/rtmdet_{size}_8xb32-300e_coco.py)
ARCH: dict[str, dict[str, Any]] = {
    "tiny": dict(deepen_factor=0.167, widen_factor=0.375, neck_in_channels=(96, 192, 384),
                 neck_out_channels=96, num_csp_blocks=1, feat_channels=96, exp_on_reg=False),
    "s": dict(deepen_factor=0.33, widen_factor=0.5, neck_in_channels=(128, 256, 512),
              neck_out_channels=128, num_csp_blocks=1, feat_channels=128, exp_on_reg=False),
    "m": dict(deepen_factor=0.67, widen_factor=0.75, neck_in_channels=(192, 384, 768),
              neck_out_channels=192, num_csp_blocks=2, feat_channels=192, exp_on_reg=True),
    "l": dict(deepen_factor=1.0, widen_factor=1.0, neck_in_channels=(256, 512, 1024),
              neck_out_channels=256, num_csp_blocks=3, feat_channels=256, exp_on_reg=True),
    "x": dict(deepen_factor=1.33, widen_factor=1.25, neck_in_channels=(320, 640, 1280),
              neck_out_channels=320, num_csp_blocks=4, feat_channels=320, exp_on_reg=True),
}
SIZES = tuple(ARCH)

# training pipeline parameters per size (the configs' train_pipeline / train_pipeline_stage2)
_TINY_PIPE = dict(resize_ratio_range=(0.5, 2.0), mosaic_max_cached_images=20, mosaic_random_pop=False,
                  mixup_max_cached_images=10, mixup_random_pop=False, mixup_prob=0.5)
PIPELINE: dict[str, dict[str, Any]] = {
    "tiny": _TINY_PIPE, "s": dict(resize_ratio_range=(0.5, 2.0)),
    "m": dict(resize_ratio_range=(0.1, 2.0)), "l": dict(resize_ratio_range=(0.1, 2.0)),
    "x": dict(resize_ratio_range=(0.1, 2.0)),
}
# rtmdet-ins_*: crops recompute boxes from the masks and may leave none, FilterAnnotations after
# them (rtmdet-ins_tiny's stage-1 crop stays a plain RandomCrop)
_INS_PIPE = dict(recompute_bbox=True, allow_negative_crop=True, min_gt_bbox_wh=(1, 1))
# mmrotate configs/rotated_rtmdet/_base_/dota_rr.py (every RTMDet-R size): Resize(1024, keep ratio),
# RandomFlip(0.75, horizontal/vertical/diagonal), RandomRotate(0.5, 180, rect_obj_labels=[9, 11]:
# storage-tank, roundabout), Pad(1024); no mosaic/mixup (rtmdet.data.transforms.pipelines)
_ROT_PIPE = dict(recipe="rotated", flip_prob=0.75, flip_directions=("horizontal", "vertical", "diagonal"),
                 rotate_prob=0.5, rotate_range=180.0, rect_obj_classes=("storage-tank", "roundabout"))

DET_TEST = TestConfig()
INS_TEST = TestConfig(score_thr=0.05, nms_pre=1000, nms_iou=0.6, max_per_img=100)
# mmrotate configs/rotated_rtmdet/*-3x-dota.py test_cfg (nms_rotated, iou_threshold 0.1), 1024 input
ROT_TEST = TestConfig(score_thr=0.05, nms_pre=2000, nms_iou=0.1, max_per_img=2000, min_bbox_size=0)

# ImageNet-pretrained CSPNeXt backbones the tiny/s recipes start from (m/l/x train from scratch)
BACKBONES = {
    "tiny": f"{_MM}/cspnext_rsb_pretrain/cspnext-tiny_imagenet_600e.pth",
    "s": f"{_MM}/cspnext_rsb_pretrain/cspnext-s_imagenet_600e.pth",
}
# RTMDet-R starts every size from an ImageNet backbone (m/l: the RSB-A1 ones)
ROT_BACKBONES = {
    **BACKBONES,
    "m": f"{_MM}/cspnext_rsb_pretrain/cspnext-m_8xb256-rsb-a1-600e_in1k-ecb3bbd9.pth",
    "l": f"{_MM}/cspnext_rsb_pretrain/cspnext-l_8xb256-rsb-a1-600e_in1k-6a760974.pth",
}


@dataclass(frozen=True)
class ModelRecord:
    """One released model: everything that differs between two entries of the zoo."""

    name: str
    family: str  # "detect" | "segment" | "rotated"
    size: str
    url: str | None  # official checkpoint; the sha256 prefix is the file name's suffix
    params_m: float
    gmacs: float | None  # at `imgsz`, torch flop counter (-ins: without the dynamic convs)
    box_ap: float | None = None  # published COCO (or DOTA mAP for rotated) figure
    mask_ap: float | None = None
    imgsz: int = 640
    num_classes: int = 80
    test: TestConfig = field(default_factory=TestConfig)
    mean: tuple[float, float, float] = MEAN_BGR
    std: tuple[float, float, float] = STD_BGR
    pipeline: Mapping[str, Any] = field(default_factory=dict)
    pretrained_backbone: str | None = None
    arch: Mapping[str, Any] = field(default_factory=dict)  # extra ModelConfig fields
    # AdamW lr of the recipe and the total batch it is given for (scaled linearly to the actual
    # total batch): RTMDet 0.004 at 256 (8x32); RTMDet-R 0.004 / 16 at 8 (schedule_3x.py)
    base_lr: tuple[float, int] = (0.004, 256)

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    def model_config(self, num_classes: int | None = None) -> ModelConfig:
        n = self.num_classes if num_classes is None else num_classes
        return ModelConfig(**ARCH[self.size], **self.arch, num_classes=n, family=self.family,
                           mean=self.mean, std=self.std)

    def test_config(self) -> TestConfig:
        return dataclasses.replace(self.test, imgsz=self.imgsz)


def _det(size, stamp, ap, params, gmacs):
    cfg = f"rtmdet_{size}_8xb32-300e_coco"
    return ModelRecord(f"rtmdet-{size}", "detect", size, f"{_MM}/{cfg}/{cfg}_{stamp}.pth", params,
                       gmacs, ap, test=DET_TEST, pipeline=PIPELINE[size],
                       pretrained_backbone=BACKBONES.get(size))


def _ins(size, cfg_batch, stamp, ap, mask_ap, params, gmacs):
    cfg = f"rtmdet-ins_{size}_{cfg_batch}-300e_coco"
    return ModelRecord(f"rtmdet-ins-{size}", "segment", size, f"{_MM}/{cfg}/{cfg}_{stamp}.pth",
                       params, gmacs, ap, mask_ap, test=INS_TEST,
                       pipeline={**PIPELINE[size], **_INS_PIPE, "stage1_plain_crop": size == "tiny"},
                       pretrained_backbone=BACKBONES.get(size))


def _rot(size, cfg, stamp, map50, params, gmacs, backbone=None):
    """RTMDet-R on DOTA v1.0 (mmrotate 1.x): architecture factors as detection's (exp_on_reg
    too), 15 classes, 1024 input. `map50`: the metafile's DOTA v1.0 test mAP (IoU 0.5)."""
    return ModelRecord(f"rtmdet-r-{size}" if cfg.endswith("3x-dota") else f"rtmdet-r-{size}-coco",
                       "rotated", size, f"{_MMR}/{cfg}/{cfg}-{stamp}.pth", params, gmacs, map50,
                       imgsz=1024, num_classes=15, test=ROT_TEST, pipeline=_ROT_PIPE,
                       pretrained_backbone=backbone or ROT_BACKBONES[size], base_lr=(0.004 / 16, 8))


RECORDS: dict[str, ModelRecord] = {r.name: r for r in [
    _det("tiny", "20220902_112414-78e30dcc", 41.1, 4.896, 8.04),
    _det("s", "20220905_161602-387a891e", 44.6, 8.887, 14.76),
    _det("m", "20220719_112220-229f527c", 49.4, 24.709, 39.07),
    _det("l", "20220719_112030-5a0be7c4", 51.5, 52.316, 79.90),
    _det("x", "20220715_230555-cc79b9ae", 52.8, 94.856, 141.19),
    _ins("tiny", "8xb32", "20221130_151727-ec670f7e", 40.5, 35.4, 5.638, 10.48),
    _ins("s", "8xb32", "20221121_212604-fdc5d7ec", 44.0, 38.7, 10.183, 19.04),
    _ins("m", "8xb32", "20221123_001039-6eba602e", 48.8, 42.1, 27.575, 48.55),
    _ins("l", "8xb32", "20221124_103237-78d1d652", 51.2, 43.7, 57.366, 96.63),
    _ins("x", "8xb16", "20221124_111313-33d4595b", 52.4, 44.6, 102.704, 167.22),
    # mmrotate configs/rotated_rtmdet/metafile.yml (single-scale 3x models; the README's later
    # table gives mAP50 75.36 for tiny) and README (params, FLOPs at 1024)
    _rot("tiny", "rotated_rtmdet_tiny-3x-dota", "9d821076", 75.60, 4.878, 20.45),
    _rot("s", "rotated_rtmdet_s-3x-dota", "11f6ccf5", 76.93, 8.862, 37.62),
    _rot("m", "rotated_rtmdet_m-3x-dota", "beeadda6", 78.24, 24.672, 99.76),
    _rot("l", "rotated_rtmdet_l-3x-dota", "23992372", 78.85, 52.266, 204.21),
    # COCO-pretrained (backbone, neck and head from rtmdet-l), trained and tested on the
    # multi-scale DOTA split (split_ms_dota)
    _rot("l", "rotated_rtmdet_l-coco_pretrain-3x-dota_ms", "06d248a2", 81.33, 52.266, 204.21,
         backbone=f"{_MM}/rtmdet_l_8xb32-300e_coco/rtmdet_l_8xb32-300e_coco_20220719_112030-5a0be7c4.pth"),
]}


def normalize_name(name: str) -> str:
    """The one spelling of a model name: lower case, dashes (`RTMDet_Ins_S` -> `rtmdet-ins-s`)."""
    return str(name).strip().lower().replace("_", "-")


def get_record(name: str) -> ModelRecord:
    """The record of a released model, or KeyError listing the known names."""
    key = normalize_name(name)
    if key not in RECORDS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(RECORDS)}")
    return RECORDS[key]


def is_model_name(name: str) -> bool:
    return normalize_name(name) in RECORDS


def model_config(name: str, num_classes: int | None = None) -> ModelConfig:
    """Architecture of a released model by name (`rtmdet-s`, `rtmdet-ins-tiny`)."""
    return get_record(name).model_config(num_classes)


def default_test_for(cfg: ModelConfig) -> TestConfig:
    """Test settings of the released model matching `cfg` (else its family's first entry)."""
    rec = record_for(cfg) or next(r for r in RECORDS.values() if r.family == cfg.family)
    return rec.test_config()


def preset_names() -> list[str]:
    return list(RECORDS)


def record_for(cfg: ModelConfig) -> ModelRecord | None:
    """The released model with `cfg`'s family and size factors (class count aside), if any."""
    for rec in RECORDS.values():
        if rec.family == cfg.family and ARCH[rec.size]["widen_factor"] == cfg.widen_factor \
                and ARCH[rec.size]["deepen_factor"] == cfg.deepen_factor:
            return rec
    return None
