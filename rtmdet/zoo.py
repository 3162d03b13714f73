"""Official checkpoints: name -> URL (sha256 prefix in the file name); download and cache."""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

_BASE = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    url: str
    box_ap: float
    params_m: float
    gmacs: float | None  # multiply-accumulates of the network at 640x640 (torch flop counter;
    # for -ins models without the per-instance dynamic convs)
    mask_ap: float | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _u(cfg: str, stamp: str) -> str:
    return f"{_BASE}/{cfg}/{cfg}_{stamp}.pth"


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("rtmdet-tiny", _u("rtmdet_tiny_8xb32-300e_coco", "20220902_112414-78e30dcc"), 41.1, 4.896, 8.04),
    ZooEntry("rtmdet-s", _u("rtmdet_s_8xb32-300e_coco", "20220905_161602-387a891e"), 44.6, 8.887, 14.76),
    ZooEntry("rtmdet-m", _u("rtmdet_m_8xb32-300e_coco", "20220719_112220-229f527c"), 49.4, 24.709, 39.07),
    ZooEntry("rtmdet-l", _u("rtmdet_l_8xb32-300e_coco", "20220719_112030-5a0be7c4"), 51.5, 52.316, 79.90),
    ZooEntry("rtmdet-x", _u("rtmdet_x_8xb32-300e_coco", "20220715_230555-cc79b9ae"), 52.8, 94.856, 141.19),
    ZooEntry("rtmdet-ins-tiny", _u("rtmdet-ins_tiny_8xb32-300e_coco", "20221130_151727-ec670f7e"), 40.5, 5.638, 10.48, 35.4),
    ZooEntry("rtmdet-ins-s", _u("rtmdet-ins_s_8xb32-300e_coco", "20221121_212604-fdc5d7ec"), 44.0, 10.183, 19.04, 38.7),
    ZooEntry("rtmdet-ins-m", _u("rtmdet-ins_m_8xb32-300e_coco", "20221123_001039-6eba602e"), 48.8, 27.575, 48.55, 42.1),
    ZooEntry("rtmdet-ins-l", _u("rtmdet-ins_l_8xb32-300e_coco", "20221124_103237-78d1d652"), 51.2, 57.366, 96.63, 43.7),
    ZooEntry("rtmdet-ins-x", _u("rtmdet-ins_x_8xb16-300e_coco", "20221124_111313-33d4595b"), 52.4, 102.704, 167.22, 44.6),
]}


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


def resolve(name: str) -> ZooEntry:
    key = name.lower().replace("_", "-")
    if key not in ZOO:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return ZOO[key]
