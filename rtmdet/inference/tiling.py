"""Tiled inference for large images (aerial/DOTA scenes, small objects): any family, any backend.

One image -> square windows of `tile` px every `tile - overlap` px, placed as `rtmdet split`
places them (`rtmdet.data.split.sliding_windows`: the last window of a row/column moved back to
end at the image edge) -> each window's patch (padded bottom/right with 114 to `tile` x `tile`
where the image is smaller than a tile, so every patch has the same scale) -> the patches of a
batch of images run through the backend `batch_size` at a time, each letterboxed to `imgsz` as a
normal image -> every patch's detections (the family's own post-processing, NMS included) ->
`family.merge`: shifted back by the window origin and merged with the family's NMS at
`nms_iou` (class-aware; rotated NMS for RTMDet-R; masks pasted into the full image), keeping
`max_per_img`.
"""
from __future__ import annotations

import numpy as np

from ..config import TestConfig
from ..data.split import sliding_windows
from ..detections import Detections

PAD_VALUE = 114  # the letterbox pad value: a padded patch looks like a letterboxed image


def check_tiling(tile, overlap) -> tuple[int, int]:
    """(tile, overlap) validated: tile a whole number >= 32, 0 <= overlap < tile."""
    for name, v in (("tile", tile), ("overlap", overlap)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name}={v!r}: must be a whole number of pixels")
    if tile < 32:
        raise ValueError(f"tile={tile}: must be >= 32")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap={overlap}: must be >= 0 and smaller than tile={tile}")
    return int(tile), int(overlap)


def tile_windows(width: int, height: int, tile: int, overlap: int) -> np.ndarray:
    """(k,4) int64 windows x0, y0, x1, y1 (all `tile` x `tile`, x outer, y inner) covering a
    width x height image; a window reaches past the image only where the image is smaller
    than `tile` on that side."""
    tile, overlap = check_tiling(tile, overlap)
    return sliding_windows(width, height, [tile], [overlap], img_rate_thr=0.0)


def crop_patch(image: np.ndarray, window) -> np.ndarray:
    """The window's pixels, padded bottom/right with `PAD_VALUE` where it reaches past the image."""
    x0, y0, x1, y1 = (int(v) for v in window)
    crop = image[y0:y1, x0:x1]
    if crop.shape[:2] == (y1 - y0, x1 - x0):
        return crop
    out = np.full((y1 - y0, x1 - x0) + image.shape[2:], PAD_VALUE, image.dtype)
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out


def predict_patches(backend, images: list[np.ndarray], cfg: TestConfig, tile: int, overlap: int,
                    batch_size: int = 8) -> list[tuple[list[Detections], np.ndarray]]:
    """Per image: (the detections of each of its patches in patch pixels, the patches' (k,2)
    x, y origins). The patches of all `images` are batched together, `batch_size` at a time."""
    from .loop import run_batch
    jobs = []  # (image index, window)
    for i, img in enumerate(images):
        jobs += [(i, w) for w in tile_windows(img.shape[1], img.shape[0], tile, overlap)]
    if backend.fixed_batch:
        batch_size = min(batch_size, backend.fixed_batch)
    dets: list[Detections] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        dets += run_batch(backend, [crop_patch(images[i], w) for i, w in chunk], cfg)
    out = []
    for i in range(len(images)):
        rows = [k for k, (j, _) in enumerate(jobs) if j == i]
        out.append(([dets[k] for k in rows], np.array([jobs[k][1][:2] for k in rows], np.int64)))
    return out


def run_tiled(backend, images: list[np.ndarray], cfg: TestConfig, tile: int, overlap: int,
              batch_size: int = 8) -> list[Detections]:
    """Decoded BGR images -> their detections, each predicted tile by tile and merged."""
    return [backend.family.merge(dets, offsets, img.shape[:2], cfg)
            for img, (dets, offsets) in zip(images, predict_patches(backend, images, cfg, tile,
                                                                    overlap, batch_size))]
