"""Downloading and caching official checkpoints (the URLs are in `rtmdet.presets`): resumable,
checked against the sha256 prefix in the file name, moved into place atomically."""
from __future__ import annotations

import hashlib
import os
import re
import socket
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
             timeout: float = 60.0, connect_timeout: float = 5.0) -> Path:
    """Fetch `url` into the cache (once). Resumes a partial `.part` file with an HTTP Range
    request, verifies the sha256 prefix in the file name, then renames into place atomically.

    The attempt is printed (URL -> cache path) when `progress`; a server that does not answer
    within `connect_timeout` seconds (connection and response headers) or stalls for `timeout`
    seconds while sending is a DownloadError saying so."""
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
    if progress:
        print(f"downloading {url} -> {final}" + (f" (resuming at {have} bytes)" if have else ""),
              flush=True)  # stdout: stderr holds only the error, one line
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    no_answer = (f"download of {url} failed: no answer within {connect_timeout:g} s (offline, "
                 f"or the server is unreachable); check the network, or put the file at {final}")
    try:
        resp = urllib.request.urlopen(req, timeout=connect_timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file is already complete
            resp = None
        else:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (TimeoutError, socket.timeout):
        raise DownloadError(no_answer) from None
    except (urllib.error.URLError, OSError) as e:
        if isinstance(getattr(e, "reason", None), (TimeoutError, socket.timeout)):
            raise DownloadError(no_answer) from None
        raise DownloadError(f"download of {url} failed: {getattr(e, 'reason', e)}") from None
    if resp is not None:  # the body may take longer between blocks than the first answer
        sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(timeout)
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
