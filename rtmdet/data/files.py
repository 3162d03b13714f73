"""Image files: which suffixes count as images, listing them, reading their size."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["IMG_EXTS", "has_image_suffix", "list_images", "read_image_size"]

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def has_image_suffix(path: str | os.PathLike) -> bool:
    """Whether the file name ends in an image extension (case-insensitive); no file access."""
    return Path(path).suffix.lower() in IMG_EXTS


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files in ``folder`` (and, when ``recursive``, every folder below it), sorted."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in found if has_image_suffix(f) and f.is_file())


def read_image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding pixels; None if unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        if w > 0 and h > 0:
            return int(w), int(h)
    except Exception:
        pass
    try:  # formats PIL does not know: fall back to a full decode
        import cv2

        im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if im is not None and im.size:
            return int(im.shape[1]), int(im.shape[0])
    except Exception:
        pass
    return None
