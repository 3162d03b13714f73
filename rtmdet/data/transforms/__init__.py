"""Image/box (and per-instance target) transforms for RTMDet training and inference.

The arithmetic follows the reference (mmdet 3.3.0 ``datasets/transforms/transforms.py`` and
mmcv 2.x ``transforms/processing.py`` + ``image/geometric.py``): the same sizes, integer
truncations, clipping, "is inside" filtering, pad value and the same sequence of random draws,
with ``numpy.random.<fn>`` replaced by the matching ``numpy.random.Generator`` call that every
transform receives explicitly::

    sample = transform(sample, rng)     # -> Sample, or None when the reference returns None

``None`` means "drop this sample and fetch another one" (mmengine's ``BaseDataset`` refetch),
which :class:`rtmdet.data.loader.TrainDataset` implements.

A sample carries its xyxy boxes and any per-instance targets (``sample.targets``: polygon masks
as `rtmdet.data.polygon_masks.PolygonTarget`, bitmap masks as `rtmdet.data.targets.MaskTarget`,
rotated boxes, ...); every geometric transform moves the targets together
with the boxes through the `rtmdet.data.targets.Target` protocol, without knowing their kind.

Modules: `sample` (Sample, Compose), `geometric` (resize, crop, flips in three directions,
RandomRotate, pad), `photometric`, `mixing` (Mosaic, MixUp), `pipelines` (the reference
pipelines per model: RTMDet's two stages, RTMDet-R's single one).
"""
from __future__ import annotations

from .geometric import FilterAnnotations, Pad, RandomCrop, RandomFlip, RandomResize, RandomRotate, Resize, rescale_size
from .mixing import CachedMixUp, CachedMosaic
from .photometric import YOLOXHSVRandomAug
from .pipelines import PipelineParams, build_rotated_pipeline, build_train_pipeline, pipeline_params
from .sample import PAD_VAL, Compose, Sample

__all__ = [
    "Sample", "rescale_size", "Compose", "CachedMosaic", "CachedMixUp",
    "Resize", "RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "RandomFlip", "RandomRotate", "Pad",
    "FilterAnnotations", "PipelineParams", "pipeline_params",
    "build_train_pipeline", "build_rotated_pipeline", "PAD_VAL",
]
