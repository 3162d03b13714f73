"""Turning a CLI SOURCE (image, folder, glob, video) into frames to detect on."""
from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path

from .data.files import has_image_suffix

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def list_images(source: str) -> list[Path]:
    """Files a SOURCE names: one file, every image and video in a folder (recursively,
    sorted), or the images and videos a glob matches."""
    p = Path(source)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if (has_image_suffix(f) or is_video(f)) and f.is_file())
    if p.is_file():
        return [p]
    matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
    return [m for m in matches if m.is_file() and (has_image_suffix(m) or is_video(m))]


def source_root(source: str, files: list[Path]) -> Path:
    """The folder output names are made relative to: SOURCE itself when it is a folder, else
    the deepest folder holding every file."""
    if Path(source).is_dir():
        return Path(source)
    parents = [str(f.resolve().parent) for f in files]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def output_names(files: list[Path], root: Path, suffix) -> list[Path]:
    """One output path per file, relative to the save folder and never the same twice: the
    file's path under `root` with its suffix replaced by `suffix(file)` (`a/x.jpg`, `b/x.jpg`
    -> `a/x.txt`, `b/x.txt`). Files whose names would still meet (`x.jpg`, `x.png`) keep their
    own suffix too (`x.jpg.txt`, `x.png.txt`); anything left is numbered (`x_2.txt`)."""
    rel = []
    for f in files:
        try:
            rel.append(f.resolve().relative_to(root.resolve()))
        except ValueError:
            rel.append(Path(f.name))
    short = [r.with_suffix(suffix(r)) for r in rel]
    counts = Counter(short)
    wanted = [s if counts[s] == 1 or r.suffix == suffix(r) else r.with_name(r.name + suffix(r))
              for r, s in zip(rel, short)]
    seen, out = set(), []
    for w in wanted:
        p, k = w, 2
        while p in seen:
            p = w.with_name(f"{w.stem}_{k}{w.suffix}")
            k += 1
        seen.add(p)
        out.append(p)
    return out
