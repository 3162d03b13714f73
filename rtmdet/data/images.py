"""Reading one image, the same way for inference, evaluation and training."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..host_pool import host_map
from .files import VIDEO_EXTS


class ImageReadError(ValueError):
    """An input image could not be read or decoded."""


def read_image(src) -> np.ndarray:
    """A path, an http(s) URL, an HxWx3 (or HxW gray) uint8 BGR array, or a PIL image
    (converted from RGB) -> HxWx3 uint8 BGR array; ImageReadError naming the input otherwise."""
    if type(src).__module__.startswith("PIL."):
        src = cv2.cvtColor(np.asarray(src.convert("RGB")), cv2.COLOR_RGB2BGR)
    if isinstance(src, np.ndarray):
        if src.ndim == 2 and src.dtype == np.uint8:
            src = cv2.cvtColor(src, cv2.COLOR_GRAY2BGR)
        if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
            raise ImageReadError(f"expected an HxWx3 uint8 BGR array, got {src.dtype} {src.shape}")
        return src
    if not isinstance(src, (str, Path)):
        raise ImageReadError(f"cannot read a {type(src).__name__}: give a path, an HxWx3 uint8 "
                             "BGR array or a PIL image")
    path = str(src)
    if path.lower().startswith(("http://", "https://")):
        return _download_image(path)
    p = Path(path)
    if p.is_dir():
        raise ImageReadError(f"{path}: a folder, not an image (model.stream(folder) goes through its "
                             "images and videos)")
    if not p.is_file():
        raise ImageReadError(f"{path}: no such file")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        if p.suffix.lower() in VIDEO_EXTS:
            raise ImageReadError(f"{path}: a video, not an image (model.stream(video) reads it frame "
                                 "by frame)")
        raise ImageReadError(f"{path}: " + ("an empty file (0 bytes)" if p.stat().st_size == 0 else
                                            "not a readable image (corrupt or unsupported format)"))
    return img


def read_each(sources) -> list[tuple[np.ndarray | None, ImageReadError | None]]:
    """(array, None) or (None, ImageReadError) for each source, in order; the files are decoded
    side by side on the host threads (`rtmdet.host_pool`)."""
    def attempt(src):
        try:
            return read_image(src), None
        except ImageReadError as e:
            return None, e
    return host_map(attempt, sources)


def is_single_image(x) -> bool:
    """Whether `x` is one image (path, array, PIL image) rather than a list of them."""
    return isinstance(x, (str, Path, np.ndarray)) or type(x).__module__.startswith("PIL.")


def _download_image(url: str, timeout: float = 30.0) -> np.ndarray:
    """Fetch an image over HTTP into memory and decode it as `cv2.imread` would a file."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = r.read()
    except urllib.error.HTTPError as e:
        raise ImageReadError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ImageReadError(f"{url}: download failed ({reason})") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None or img.size == 0:
        raise ImageReadError(f"{url}: not a readable image (corrupt or unsupported format)")
    return img
