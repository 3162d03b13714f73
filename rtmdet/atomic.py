"""Atomic writes of user-visible outputs (pictures, videos, txt, json, ONNX, engines,
checkpoints): each goes to a temporary file in the target's folder, is checked (every byte
written, encoder success, fsync), then `os.replace`d into place. A failure never leaves a
partial file under the final name and becomes one `WriteError` naming the path.

The temporary file is created with mode 0666 minus the user's umask, like any `open(..., "w")`,
so outputs (checkpoints included) get the usual permissions (0644 with umask 022)."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path


class WriteError(OSError):
    """An output could not be written (read-only folder, disk full...); nothing was left under
    its name. `str(e)` is one line naming the path."""

    def __init__(self, path, reason):
        super().__init__(f"cannot write {path}: {reason}")
        self.path = str(path)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(path, f"cannot create its folder ({_reason(e)})") from None


def ensure_dir(folder: str | os.PathLike) -> Path:
    """`folder`, created if needed and checked to be writable (a file is created and removed
    there), so a run finds out before doing any work; WriteError otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WriteError(folder, "it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(folder, f"cannot create the folder ({_reason(e)})") from None
    tmp, fd = _create(folder / "probe")
    os.close(fd)
    _discard(tmp)
    return folder


def _create(path: Path) -> tuple[Path, int]:
    """A new temporary file next to `path` (0666 & ~umask), opened for writing."""
    _make_parent(path)
    if path.is_dir():
        raise WriteError(path, "it is a folder (give a file name)")
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise WriteError(path, _reason(e)) from None
    return tmp, fd


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(path, _reason(e)) from None
    _fsync_dir(path.parent)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


class AtomicFile:
    """The binary file object `atomic_open` yields: `write` writes every byte (a short write
    is retried, a write that makes no progress is 'no space left'), and remembers the first
    OSError so a caller that swallows it (torch.save's C++ writer) cannot hide it."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path, self.error, self.written = fd, path, None, 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                n = os.write(self.fd, view)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
                self.written += n
        except OSError as e:
            self.error = self.error or e
            raise
        return len(data) if not isinstance(data, memoryview) else data.nbytes

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def _discard_on_error(tmp: Path, path: Path, pending_error=lambda: None):
    """Remove `tmp` when the block fails; OSErrors (and an error `pending_error()` recorded by
    the writer) become one `WriteError` naming `path`; other exceptions pass through."""
    try:
        yield
    except WriteError:
        _discard(tmp)
        raise
    except OSError as e:
        _discard(tmp)
        raise WriteError(path, _reason(e)) from None
    except BaseException:
        _discard(tmp)
        if pending_error() is not None:
            raise WriteError(path, _reason(pending_error())) from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike):
    """`with atomic_open(p) as f: f.write(b"...")`: the bytes land under `p` only when the
    block finishes (after fsync); any error removes the temporary file. OSErrors become
    `WriteError`; other exceptions pass through unchanged."""
    path = Path(path)
    tmp, fd = _create(path)
    f = AtomicFile(fd, path)
    # e.g. torch.save's RuntimeError after a failed write: report the write's OSError
    with _discard_on_error(tmp, path, lambda: f.error):
        try:
            yield f
            if f.error is not None:
                raise f.error
            os.fsync(fd)
        finally:
            os.close(fd)
    _commit(tmp, path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | os.PathLike, obj, **kw) -> Path:
    import json
    return write_text(path, json.dumps(obj, **kw))


def write_image(path: str | os.PathLike, image, params: list[int] | None = None) -> Path:
    """An image encoded by OpenCV by the file's extension (.jpg, .png...), written atomically."""
    import cv2
    path = Path(path)
    try:
        ok, buf = cv2.imencode(path.suffix or ".jpg", image, params or [])
    except cv2.error as e:
        raise WriteError(path, f"cannot encode the image ({str(e).strip().splitlines()[-1]})") from None
    if not ok:
        raise WriteError(path, f"OpenCV cannot encode {path.suffix or 'this'} images")
    return write_bytes(path, buf.tobytes())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, check=None):
    """For writers that need a file name (cv2.VideoWriter, savefig): yields a temporary path
    with the same suffix in the same folder; when the block ends the file must exist and not be
    empty (and pass `check(tmp_path)` -> error text or None), is fsynced and renamed to `path`."""
    path = Path(path)
    tmp, fd = _create(path)
    os.close(fd)
    with _discard_on_error(tmp, path):
        yield tmp
        size = tmp.stat().st_size if tmp.exists() else 0
        if size == 0:
            raise WriteError(path, "nothing was written")
        problem = check(tmp) if check is not None else None
        if problem:
            raise WriteError(path, problem)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _commit(tmp, path)
