"""Turning a CLI SOURCE (image, folder, glob, video) into frames to detect on."""
from __future__ import annotations

import glob
from pathlib import Path

from .data.files import has_image_suffix
from .data.files import list_images as images_in

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def list_images(source: str) -> list[Path]:
    """Files an image SOURCE names: one file, every image in a folder (sorted), or a glob."""
    p = Path(source)
    if p.is_dir():
        return images_in(p)
    if p.is_file():
        return [p]
    matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
    return [m for m in matches if m.is_file() and (has_image_suffix(m) or is_video(m))]
