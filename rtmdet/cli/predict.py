"""`rtmdet predict`: images, folders, globs, videos, URLs and cameras -> drawn pictures, txt and json.

Outputs keep each source's path under the SOURCE folder (`a/x.jpg` -> `<save-dir>/a/x.jpg`,
`<save-dir>/labels/a/x.txt`), so two sources never share an output; predictions.json records
the source and the outputs of every image or frame. Every file is written atomically. Ctrl-C
stops the run but keeps what was done: the frames of a video so far, the labels and the json."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from .common import (UsageError, add_model_args, add_speed_args, add_tile_args, check_inference,
                     check_model_arg, image_size, open_model, positive_int, tile_knobs, unit_float)

log = logging.getLogger("rtmdet")

def cmd_predict(args) -> int:
    from tqdm import tqdm

    from ..atomic import ensure_dir, write_image, write_text
    from ..inference.prefetch import BackgroundWriter, on_accelerator, ordered_map
    from ..inference.stream import read_images
    from ..signals import exit_code
    from ..sources import is_url, is_video, list_sources, output_names, source_label, source_root, url_file_name

    check_model_arg(args)
    tiling = tile_knobs(args)
    files = list_sources(args.source)
    if not files:
        raise UsageError(f"no images or videos found at {args.source}")
    yolo = args.txt_format == "yolo"
    if yolo and not args.save_txt:
        raise UsageError("--txt-format yolo: give --save-txt too")
    if yolo and any(is_video(f) for f in files):
        raise UsageError(f"--txt-format yolo writes one label file per image; "
                         f"{source_label(next(f for f in files if is_video(f)))} is a video")
    root = source_root(args.source, files)

    def image_suffix(f):
        return Path(url_file_name(f)).suffix if is_url(f) else f.suffix

    drawn = dict(zip(files, output_names(files, root, lambda f: ".mp4" if is_video(f) else image_suffix(f))))
    labels = dict(zip(files, output_names(files, root, lambda f: ".txt")))
    save_dir = Path(args.save_dir)
    writes = not args.no_save or args.save_txt or args.save_json or args.save_crop
    if writes:  # a folder we cannot write to is found before the model is loaded
        ensure_dir(save_dir)
    model = open_model(args)
    knobs = dict(score_thr=args.score_thr, nms_iou=args.iou, max_per_img=args.max_det,
                 imgsz=args.imgsz, **tiling)
    check_inference(model, knobs)
    if yolo:  # the class names a YOLO dataset needs beside its labels
        write_text(save_dir / "classes.txt", "".join(f"{n}\n" for n in model.class_names))
    if args.classes is not None:
        from ..inference.classes import class_indices
        try:
            knobs["classes"] = class_indices(args.classes, model.class_names)
        except ValueError as e:
            raise UsageError(str(e)) from None
    failed, n_dets = [], 0
    # predictions.json is streamed to its temporary file; an error (nothing readable) discards it
    with Records.open(save_dir / "predictions.json" if args.save_json else None) as records:
        crop_taken = set()  # --save-crop names given out so far
        images = [f for f in files if not is_video(f)]
        videos = [f for f in files if is_video(f)]
        batches = [images[start:start + args.batch] for start in range(0, len(images), args.batch)]

        def save(f, img, d, crops):
            if not args.no_save:
                write_image(save_dir / drawn[f], d.draw(img))
            if args.save_txt:
                write_text(save_dir / "labels" / labels[f], d.to_yolo() if yolo else d.to_txt())
            for name, crop in zip(crops, d.crops(img)):
                write_image(save_dir / name, crop)

        interrupted = 0  # or the exit code of the signal that stopped the run
        bar = tqdm(total=len(images), desc="predict", unit="img", disable=len(images) < 2)
        # on a GPU, reading ahead and drawing / writing behind overlap the network
        pipelined = on_accelerator(model)
        with bar, BackgroundWriter(enabled=pipelined) as writer, \
                contextlib.closing(ordered_map(read_images, batches, ahead=int(pipelined))) as read:
            try:
                for batch, (chunk, arrays, bad) in zip(batches, read):
                    for f, e in bad:
                        failed.append(source_label(f))
                        log.warning("skipped %s", e)
                    if arrays:
                        dets = model.predict(arrays, batch_size=args.batch, **knobs)
                        for f, img, d in zip(chunk, arrays, dets):
                            d.source = source_label(f)
                            rec = d.to_dict() if args.save_json else {}
                            if not args.no_save:
                                rec["output"] = str(drawn[f])
                            if args.save_txt:
                                rec["labels"] = str(Path("labels") / labels[f])
                            crops = crop_names(d, labels[f].with_suffix("").as_posix(), drawn[f].suffix,
                                               crop_taken) if args.save_crop else []
                            if crops:
                                rec["crops"] = [str(c) for c in crops]
                            # the writer thread gets host copies: no CUDA call off the main thread
                            writer.submit(save, f, img, d.numpy() if pipelined else d, crops)
                            records.append(rec)  # after its files: Ctrl-C in a write leaves neither
                            n_dets += len(d)
                    bar.update(len(batch))
            except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the images done so far are still
                interrupted = exit_code(e)  # written (the writer drains)
        for v in videos:
            if interrupted:
                break
            n, interrupted = _predict_video(model, v, save_dir, drawn[v], labels[v], knobs, records, args,
                                            crop_taken)
            if n is None:
                failed.append(source_label(v))
            else:
                n_dets += n
        if not records.count and not interrupted:
            raise UsageError("nothing could be read: " + ", ".join(failed))
    print(("interrupted: " if interrupted else "")
          + f"{records.count} image(s)/frame(s), {n_dets} detection(s)"
          + (f", {len(failed)} unreadable skipped: {', '.join(failed)}" if failed else "")
          + (f"; results in {save_dir}" if writes else ""))
    return interrupted or 0


class Records:
    """One record per image or frame done: counted always, and with --save-json written at once
    into predictions.json's temporary file (a JSON list, one record per line), so a camera or
    stream watched for hours holds none of them in memory; the file takes its name when the run
    ends, finished or stopped (Ctrl-C, SIGTERM), and is discarded by an error."""

    def __init__(self, file=None):
        self.file, self.count = file, 0

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path | None):
        """Records that stream to `path` (None: counted only)."""
        if path is None:
            yield cls()
            return
        from ..atomic import atomic_open
        with atomic_open(path) as f:
            f.write(b"[")
            records = cls(f)
            yield records
            f.write(b"\n]\n" if records.count else b"]\n")

    def append(self, rec: dict) -> None:
        if self.file is not None:
            self.file.write(((",\n" if self.count else "\n") + json.dumps(rec)).encode())
        self.count += 1


def crop_names(d, stem: str, suffix: str, taken: set) -> list[Path]:
    """--save-crop: `crops/<class name>/<stem>_<k><suffix>` for the k-th detection (`stem`: the
    source's output path without suffix; a video's adds the frame index). A name an earlier
    crop of this run has (an image `clip_0.jpg` beside a video `clip.mp4`) gets `-2`, `-3`..."""
    out = []
    for k, n in enumerate(d.names()):
        base = Path("crops") / _folder_name(n) / f"{stem}_{k}"
        name, i = base.with_name(base.name + suffix), 1
        while name in taken:
            i += 1
            name = base.with_name(f"{base.name}-{i}{suffix}")
        taken.add(name)
        out.append(name)
    return out


def _folder_name(name: str) -> str:
    """A class name as one folder name: path separators and characters Windows forbids -> _."""
    import re
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).strip().strip(".") or "_"


class _NoFrames(Exception):
    pass


def _count_frames(path: Path) -> int:
    import cv2
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened() and cap.grab():
        n += 1
    cap.release()
    return n


def _predict_video(model, path, save_dir: Path, out_name: Path, txt_name: Path,
                   knobs: dict, records: Records, args, crop_taken: set) -> tuple[int | None, bool]:
    """Detections of every frame of a video, stream or camera (drawn into
    `<save-dir>/<out_name>`, an mp4 written to a temporary name, checked frame by frame, then
    renamed; --save-txt lines streamed to a temporary file frame by frame, so an hours-long
    stream holds none in memory) -> (detections, exit code of the Ctrl-C or SIGTERM that ended
    it, else 0); detections None when nothing could be read. After a stop the frames done so
    far are kept: the video and the labels are closed and renamed."""
    import itertools

    import cv2
    from tqdm import tqdm

    from ..atomic import WriteError, atomic_open, atomic_path, write_image
    from ..inference.prefetch import BackgroundWriter, on_accelerator, ordered_map
    from ..inference.stream import CANNOT_OPEN, NO_FRAME, VideoReader
    from ..signals import exit_code
    from ..sources import source_label
    label = source_label(path)
    video = VideoReader(path, args.vid_stride)
    if not video.opened:
        video.close()
        log.warning("skipped %s: %s", label, CANNOT_OPEN)
        return None, 0
    # frame_idx counts the frames detected on (and drawn); their indices in the video are `idx`
    n, frame_idx, interrupted = 0, 0, 0
    out = save_dir / out_name
    written = [0]

    def check(tmp):
        got = _count_frames(tmp)
        return None if got == written[0] else f"{got} of {written[0]} frames were written"

    def put(frame, d):
        writer.write(d.draw(frame))
        written[0] += 1

    def put_crops(frame, d, names):
        for name, crop in zip(names, d.crops(frame)):
            write_image(save_dir / name, crop)

    writer = None
    try:
        with contextlib.ExitStack() as stack:
            tmp = None if args.no_save else stack.enter_context(atomic_path(out, check=check))
            txt = None  # --save-txt's file, opened with the first frame
            pipelined = on_accelerator(model)
            background = stack.enter_context(BackgroundWriter(enabled=pipelined))
            batches = stack.enter_context(contextlib.closing(
                ordered_map(lambda _: video.read(args.batch), itertools.count(), ahead=int(pipelined))))
            with tqdm(total=video.frames or None, desc=out_name.stem, unit="frame") as bar:
                try:
                    for frames in batches:
                        dets = model.predict([f for _, f in frames], batch_size=args.batch,
                                             **knobs) if frames else []
                        for (idx, frame), d in zip(frames, dets):
                            d.source = f"{label}#{idx}"
                            n += len(d)
                            rec = d.to_dict() if args.save_json else {}
                            if tmp is not None:
                                if writer is None:
                                    h, w = frame.shape[:2]
                                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                                             video.fps / video.stride, (w, h))
                                    if not writer.isOpened():
                                        raise WriteError(out, "OpenCV cannot open an mp4 video writer")
                                background.submit(put, frame, d.numpy() if pipelined else d)
                                rec["output"] = f"{out_name}#{frame_idx}"
                            crops = crop_names(d, f"{txt_name.with_suffix('').as_posix()}_{idx}",
                                               ".jpg", crop_taken) if args.save_crop else []
                            if crops:
                                background.submit(put_crops, frame, d.numpy() if pipelined else d, crops)
                                rec["crops"] = [str(c) for c in crops]
                            if args.save_txt:
                                if txt is None:
                                    txt = stack.enter_context(atomic_open(save_dir / "labels" / txt_name))
                                txt.write("".join(f"{idx} {line}\n" for line in d.to_txt().splitlines()).encode())
                                rec["labels"] = str(Path("labels") / txt_name)
                            records.append(rec)
                            frame_idx += 1
                        bar.update(len(frames))
                        if len(frames) < args.batch:
                            break
                except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: keep the frames done so far
                    interrupted = exit_code(e)
            background.close()
            if writer is not None:
                writer.release()
            if frame_idx == 0:  # leaves nothing behind (the temporary file is removed)
                raise _NoFrames
    except _NoFrames:
        if not interrupted:
            log.warning("skipped %s: %s", label, NO_FRAME)
        return (0 if interrupted else None), interrupted
    finally:
        video.close()
    return n, interrupted


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="detect objects in images, folders, globs, videos, URLs or cameras")
    p.add_argument("source", help="image, folder (images and videos, recursively), glob pattern, "
                                  "video file, URL (an image, a video or an rtsp/rtmp/http stream) "
                                  "or camera index (0); Ctrl-C stops and keeps what was done")
    add_model_args(p)
    p.add_argument("--score-thr", type=unit_float, default=0.3, help="keep detections above (default 0.3)")
    p.add_argument("--iou", type=unit_float, default=None, help="NMS IoU threshold (default: model's)")
    p.add_argument("--max-det", type=positive_int, default=None, help="detections per image (default: model's)")
    p.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="detect only these classes: indices or names (e.g. 0 2 or person car)")
    add_tile_args(p)
    add_speed_args(p)
    p.add_argument("--imgsz", type=image_size, default=None, help="network input size (default: model's)")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--vid-stride", type=positive_int, default=1, metavar="N",
                   help="videos and streams: detect on every N-th frame (default 1: all); the "
                        "drawn video has those frames, at 1/N of the frame rate")
    p.add_argument("--save-dir", default="runs/predict",
                   help="outputs keep each source's path under the SOURCE folder (overwritten "
                        "when run again into the same folder)")
    p.add_argument("--save-txt", action="store_true",
                   help="labels/<path>.txt: label score x1 y1 x2 y2 (videos: frame first)")
    p.add_argument("--txt-format", choices=("rtmdet", "yolo"), default="rtmdet",
                   help="yolo: --save-txt writes YOLO labels (class cx cy w h normalised; "
                        "polygons for masks, corners for rotated boxes; no scores) and "
                        "classes.txt: a dataset `rtmdet train` reads (pseudo-labels; images only)")
    p.add_argument("--save-json", action="store_true",
                   help="predictions.json: every detection with its source and outputs")
    p.add_argument("--save-crop", action="store_true",
                   help="crops/<class>/<path>_<k>.jpg: the image inside each detection's box "
                        "(videos: <path>_<frame>_<k>.jpg)")
    p.add_argument("--no-save", action="store_true", help="do not write drawn images/videos")
    p.set_defaults(func=cmd_predict)
