"""Downloading and caching official checkpoints (the URLs are in `rtmdet.presets`): resumable,
checked against the sha256 prefix in the file name, moved into place atomically."""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded or failed its checksum."""


def cache_dir() -> Path:
    return Path(os.environ.get("RTMDET_HOME") or Path.home() / ".cache" / "rtmdet")


def hash_prefix(filename: str) -> str | None:
    """The sha256 prefix OpenMMLab puts at the end of a file name (`..._112414-78e30dcc.pth`)."""
    m = re.search(r"-([0-9a-f]{8,64})\.pth$", filename)
    return m.group(1) if m else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest_dir: str | os.PathLike | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch `url` into the cache (once). Resumes a partial `.part` file with an HTTP Range
    request, verifies the sha256 prefix in the file name, then renames into place atomically."""
    dest_dir = Path(dest_dir) if dest_dir else cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = url.rsplit("/", 1)[-1]
    final = dest_dir / name
    prefix = hash_prefix(name)
    if final.exists():
        if prefix is None or sha256_file(final).startswith(prefix):
            return final
        final.unlink()  # a corrupted cache entry: fetch again
    part = dest_dir / (name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file is already complete
            resp = None
        else:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"download of {url} failed: {e}") from None
    if resp is not None:
        with resp:
            if have and resp.status != 206:  # server ignored Range: start over
                have = 0
            length = resp.headers.get("Content-Length")
            expected = int(length) + have if length is not None else None
            mode = "ab" if have else "wb"
            got = have
            with open(part, mode) as f, tqdm(total=expected, initial=have, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc=name, disable=not progress,
                                               leave=False) as bar:
                try:
                    while True:
                        block = resp.read(1 << 16)
                        if not block:
                            break
                        f.write(block)
                        got += len(block)
                        bar.update(len(block))
                except (OSError, urllib.error.URLError) as e:
                    raise DownloadError(f"download of {url} interrupted after {got} bytes "
                                        f"({e}); run again to resume") from None
            if expected is not None and got < expected:
                raise DownloadError(f"download of {url} incomplete: {got} of {expected} bytes; "
                                    "run again to resume")
    if prefix is not None:
        digest = sha256_file(part)
        if not digest.startswith(prefix):
            part.unlink()
            raise DownloadError(f"{name}: sha256 {digest[:len(prefix)]}... does not match the "
                                f"expected prefix {prefix}; the partial file was removed")
    os.replace(part, final)
    return final
