"""Detection over what `rtmdet predict SOURCE` names, from Python: images, folders, globs,
videos, URLs and cameras become one `Frame` at a time, predicted in batches, so an endless
camera or stream keeps memory flat.

    for f in model.stream("clips/", score_thr=0.3):        # or rtmdet.Detector(...).stream
        print(f.source, len(f.detections))                 # "clips/a.jpg", "clips/b.mp4#12"

The readers (`read_images`, `VideoReader`) are the ones `rtmdet predict` uses."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..detections import Detections
from ..sources import Source, is_video, list_sources, source_label
from .prefetch import on_accelerator, ordered_map

log = logging.getLogger("rtmdet")

# why a video, stream or camera gave nothing (after its label, in `rtmdet predict` too)
CANNOT_OPEN = "cannot be opened (not a readable video, stream or camera)"
NO_FRAME = "no frame could be read"


@dataclass
class Frame:
    """One image, or one frame of a video or stream, with what was found in it."""

    source: str              # "a/x.jpg", "clip.mp4#12", "camera 0#3" (as in predictions.json)
    image: np.ndarray        # BGR uint8, as read
    detections: Detections   # `.source` is `source` too
    item: Source             # the file, URL or camera index it came from
    index: int | None = None  # the frame's index in its video or stream; None for an image


def read_images(paths: Iterable) -> tuple[list, list[np.ndarray], list[tuple]]:
    """(readable paths, their BGR arrays, [(unreadable path, ImageReadError)]); the files are
    decoded side by side on the host threads (`rtmdet.host_pool`)."""
    from ..data.images import read_each
    paths = list(paths)
    ok, arrays, bad = [], [], []
    for f, (img, err) in zip(paths, read_each(paths)):
        if err is None:
            arrays.append(img)
            ok.append(f)
        else:
            bad.append((f, err))
    return ok, arrays, bad


def open_capture(item: Source):
    """cv2.VideoCapture of a video file, a URL (through FFmpeg) or a camera index. OpenCV's own
    warnings while it tries its backends are muted: a failure gets one warning of ours."""
    import cv2
    logs = getattr(getattr(cv2, "utils", None), "logging", None)
    level = logs.getLogLevel() if logs is not None else None
    if logs is not None:
        logs.setLogLevel(logs.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(item) if isinstance(item, int) else cv2.VideoCapture(str(item))
    finally:
        if logs is not None:
            logs.setLogLevel(level)


class VideoReader:
    """A video file, URL or camera read in batches of (frame index, frame); with `stride` N
    only every N-th frame is decoded (the ones between are grabbed, not decoded)."""

    def __init__(self, item: Source, stride: int = 1):
        import cv2
        self.item, self.stride, self.next_index = item, stride, 0
        self.cap = open_capture(item)
        self.opened = self.cap.isOpened()
        fps = self.cap.get(cv2.CAP_PROP_FPS) if self.opened else 0.0
        self.fps = fps if 0 < fps <= 240 else 25.0  # streams report 0 or their clock rate (90000)
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.opened else 0
        self.frames = -(-count // stride) if count > 0 else 0  # to be read; 0: unknown (streams)

    def read(self, n: int) -> list[tuple[int, np.ndarray]]:
        """Up to `n` next (index, frame) pairs; fewer only at the end."""
        out = []
        while len(out) < n:
            ok, frame = self.cap.read()
            if not ok:
                break
            out.append((self.next_index, frame))
            self.next_index += 1
            for _ in range(self.stride - 1):
                if not self.cap.grab():
                    break
                self.next_index += 1
        return out

    def close(self) -> None:
        self.cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def expand(source) -> list[Source]:
    """The items a source names: a str/Path as `rtmdet predict SOURCE` takes it, a camera
    index, or a list of these."""
    if isinstance(source, (list, tuple)):
        return [item for s in source for item in expand(s)]
    if isinstance(source, int) and not isinstance(source, bool):
        return [source]
    if isinstance(source, (str, Path)):
        return list_sources(str(source))
    raise TypeError(f"a source is a path, glob, URL, camera index or a list of them, got "
                    f"{type(source).__name__} (arrays go to predict())")


def stream(model, source, batch_size: int = 8, vid_stride: int = 1,
           on_skip: Callable[[Source, str], None] | None = None, **knobs) -> Iterator[Frame]:
    """Every image and video frame `source` names, in order, predicted `batch_size` at a time
    by `model` (an RTMDet or a Detector; `knobs` are its `predict` arguments). Videos and
    streams give every `vid_stride`-th frame. What cannot be read is skipped: `on_skip(item,
    message)` (one line naming the item), by default a logged warning. On a GPU the next batch
    is read on a thread while the current one runs. FileNotFoundError when `source` names
    nothing."""
    if batch_size < 1 or vid_stride < 1:
        raise ValueError(f"batch_size and vid_stride must be >= 1, got {batch_size}, {vid_stride}")
    items = expand(source)
    if not items:
        raise FileNotFoundError(f"no images or videos found at {source}")
    skip = on_skip or (lambda item, message: log.warning("skipped %s", message))
    return _frames(model, items, batch_size, vid_stride, skip, knobs)  # checked above, run lazily


def _frames(model, items, batch_size, vid_stride, skip, knobs) -> Iterator[Frame]:
    ahead = int(on_accelerator(model))
    runs: list[list] = []  # consecutive images form one run (batched together); a video is one
    for item in items:
        if not is_video(item) and runs and not is_video(runs[-1][0]):
            runs[-1].append(item)
        else:
            runs.append([item])
    for run in runs:
        if is_video(run[0]):
            yield from _video_frames(model, run[0], batch_size, vid_stride, skip, ahead, knobs)
            continue
        batches = [run[i:i + batch_size] for i in range(0, len(run), batch_size)]
        read = ordered_map(read_images, batches, ahead=ahead)
        try:
            for ok, arrays, bad in read:
                for f, e in bad:
                    skip(f, str(e))
                dets = model.predict(arrays, batch_size=batch_size, **knobs) if arrays else []
                for f, img, d in zip(ok, arrays, dets):
                    d.source = source_label(f)
                    yield Frame(d.source, img, d, f)
        finally:
            read.close()


def _video_frames(model, item, batch_size, stride, skip, ahead, knobs) -> Iterator[Frame]:
    import itertools
    label = source_label(item)
    with VideoReader(item, stride) as video:
        if not video.opened:
            skip(item, f"{label}: {CANNOT_OPEN}")
            return
        read = ordered_map(lambda _: video.read(batch_size), itertools.count(), ahead=ahead)
        n = 0
        try:
            for frames in read:
                dets = model.predict([f for _, f in frames], batch_size=batch_size, **knobs) if frames else []
                for (idx, frame), d in zip(frames, dets):
                    d.source = f"{label}#{idx}"
                    n += 1
                    yield Frame(d.source, frame, d, item, idx)
                if len(frames) < batch_size:
                    break
        finally:
            read.close()
        if n == 0:
            skip(item, f"{label}: {NO_FRAME}")
