"""Turning a CLI SOURCE (image, folder, glob, video) into frames to detect on."""
from __future__ import annotations

import glob
from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def list_images(source: str) -> list[Path]:
    """Files an image SOURCE names: one file, every image in a folder (sorted), or a glob."""
    p = Path(source)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    if p.is_file():
        return [p]
    matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
    return [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
