"""Turning a CLI SOURCE (image, folder, glob, video, URL, camera) into frames to detect on.

A source item is a `Path` (a file), a `str` URL (an image to download, or a video or stream
OpenCV's FFmpeg opens: http(s), rtsp, rtmp, udp, tcp) or an `int` (a camera index)."""
from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Union
from urllib.parse import unquote, urlsplit

from .data.files import VIDEO_EXTS, has_image_suffix

URL_SCHEMES = ("http://", "https://", "rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://")

Source = Union[Path, str, int]


def is_url(item) -> bool:
    return isinstance(item, str) and item.lower().startswith(URL_SCHEMES)


def url_file_name(url: str) -> str:
    """The last part of a URL's path (`https://h/a/bus.jpg?x=1` -> `bus.jpg`), else its host."""
    parts = urlsplit(url)
    return PurePosixPath(unquote(parts.path)).name or parts.hostname or "stream"


def is_video(item: Source) -> bool:
    """Videos, cameras and streams are read frame by frame; a URL is an image only when its
    path ends in an image suffix."""
    if isinstance(item, int):
        return True
    if is_url(item):
        return not has_image_suffix(url_file_name(item))
    return Path(item).suffix.lower() in VIDEO_EXTS


def source_label(item: Source) -> str:
    """How an item is named in logs and in predictions.json."""
    return f"camera {item}" if isinstance(item, int) else str(item)


def list_sources(source: str) -> list[Source]:
    """Items a SOURCE names: a URL; a camera index (digits that name no file); one file; every
    image and video in a folder (recursively, sorted); or the images and videos a glob matches."""
    if is_url(source):
        return [source]
    if source.isdigit() and not Path(source).exists():
        return [int(source)]
    p = Path(source)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if (has_image_suffix(f) or is_video(f)) and f.is_file())
    if p.is_file():
        return [p]
    matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
    return [m for m in matches if m.is_file() and (has_image_suffix(m) or is_video(m))]


def source_root(source: str, files: list[Source]) -> Path:
    """The folder output names are made relative to: SOURCE itself when it is a folder, else
    the deepest folder holding every file."""
    if Path(source).is_dir():
        return Path(source)
    parents = [str(f.resolve().parent) for f in files if isinstance(f, Path)]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def output_names(files: list[Source], root: Path, suffix) -> list[Path]:
    """One output path per item, relative to the save folder and never the same twice: the
    file's path under `root` with its suffix replaced by `suffix(item)` (`a/x.jpg`, `b/x.jpg`
    -> `a/x.txt`, `b/x.txt`; a URL's file name, `camera0` for camera 0). Files whose names would
    still meet (`x.jpg`, `x.png`) keep their own suffix too (`x.jpg.txt`, `x.png.txt`); anything
    left is numbered (`x_2.txt`)."""
    rel, base = [], root.resolve()
    for f in files:
        if isinstance(f, int):
            rel.append(Path(f"camera{f}"))
        elif is_url(f):
            rel.append(Path(url_file_name(f)))
        else:
            try:
                rel.append(f.resolve().relative_to(base))
            except ValueError:
                rel.append(Path(f.name))
    ext = [suffix(f) for f in files]
    short = [r.with_suffix(e) for r, e in zip(rel, ext)]
    counts = Counter(short)
    wanted = [s if counts[s] == 1 or r.suffix == e else r.with_name(r.name + e)
              for r, s, e in zip(rel, short, ext)]
    seen, out = set(), []
    for w in wanted:
        p, k = w, 2
        while p in seen:
            p = w.with_name(f"{w.stem}_{k}{w.suffix}")
            k += 1
        seen.add(p)
        out.append(p)
    return out
