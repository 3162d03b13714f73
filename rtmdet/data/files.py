"""Image files: which suffixes count as images, listing them, reading their size."""
from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["IMG_EXTS", "has_image_suffix", "list_images", "read_image_size"]

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}  # read by frame


def has_image_suffix(path: str | os.PathLike) -> bool:
    """Whether the file name ends in an image extension (case-insensitive); no file access."""
    return Path(path).suffix.lower() in IMG_EXTS


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files in ``folder`` (and, when ``recursive``, every folder below it), sorted."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in found if has_image_suffix(f) and f.is_file())


def read_image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of the image as ``cv2.imread(path, cv2.IMREAD_COLOR)`` decodes it — the
    way training and inference read it — from the header, without decoding pixels; None if
    unreadable. OpenCV turns a picture by its EXIF orientation (phone photos: 6 or 8, a quarter
    turn), so such an image is ``h x w`` decoded though its header says ``w x h``; YOLO and DOTA
    labels refer to the turned picture, as in ultralytics."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            (w, h), fmt = im.size, im.format
            orientation = im.getexif().get(_ORIENTATION) if w > 0 and h > 0 else None
        if w > 0 and h > 0:
            if orientation not in _QUARTER_TURNS:
                return int(w), int(h)
            turns = _opencv_turns(fmt)
            if turns is not None:
                return (int(h), int(w)) if turns else (int(w), int(h))
    except Exception:
        pass
    try:  # formats PIL does not know, or an orientation we cannot predict: a full decode
        import cv2

        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if im is not None and im.size:
            return int(im.shape[1]), int(im.shape[0])
    except Exception:
        pass
    return None


_ORIENTATION = 0x0112  # the EXIF tag
_QUARTER_TURNS = (5, 6, 7, 8)  # orientations that swap width and height


@functools.lru_cache(maxsize=None)
def _opencv_turns(fmt: str | None) -> bool | None:
    """Whether this OpenCV applies the EXIF orientation of a `fmt` (PIL's format name) image,
    found once by decoding a small image tagged with orientation 6; None when that cannot be
    found out (the caller then decodes the file itself)."""
    try:
        import io

        import cv2
        import numpy as np
        from PIL import Image

        probe = Image.new("RGB", (16, 8))
        exif = probe.getexif()
        exif[_ORIENTATION] = 6
        buf = io.BytesIO()
        probe.save(buf, format=fmt, exif=exif.tobytes())
        img = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return None
        return {(8, 16): True, (16, 8): False}.get(tuple(img.shape[:2][::-1]))
    except Exception:
        return None
