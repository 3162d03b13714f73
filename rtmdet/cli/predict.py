"""`rtmdet predict`: images, folders, globs and videos -> drawn pictures, txt and json.

Outputs keep each source's path under the SOURCE folder (`a/x.jpg` -> `<save-dir>/a/x.jpg`,
`<save-dir>/labels/a/x.txt`), so two sources never share an output; predictions.json records
the source and the outputs of every image or frame. Every file is written atomically."""
from __future__ import annotations

import logging
from pathlib import Path

from .common import (UsageError, add_model_args, add_speed_args, add_tile_args, check_model_arg, image_size,
                     open_model, positive_int, tile_knobs, unit_float)

log = logging.getLogger("rtmdet")


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from ..atomic import ensure_dir, write_image, write_json, write_text
    from ..data.images import ImageReadError, read_image
    from ..inference.prefetch import BackgroundWriter, on_accelerator, ordered_map
    from ..sources import is_video, list_images, output_names, source_root

    check_model_arg(args)
    tiling = tile_knobs(args)
    files = list_images(args.source)
    if not files:
        raise UsageError(f"no images or videos found at {args.source}")
    root = source_root(args.source, files)
    drawn = dict(zip(files, output_names(files, root, lambda r: ".mp4" if is_video(r) else r.suffix)))
    labels = dict(zip(files, output_names(files, root, lambda r: ".txt")))
    save_dir = Path(args.save_dir)
    writes = not args.no_save or args.save_txt or args.save_json
    if writes:  # a folder we cannot write to is found before the model is loaded
        ensure_dir(save_dir)
    model = open_model(args)
    knobs = dict(score_thr=args.score_thr, nms_iou=args.iou, max_per_img=args.max_det,
                 imgsz=args.imgsz, **tiling)
    records, failed, n_dets = [], [], 0
    images = [f for f in files if not is_video(f)]
    videos = [f for f in files if is_video(f)]
    batches = [images[start:start + args.batch] for start in range(0, len(images), args.batch)]

    def read_batch(batch):
        """(readable files, their arrays, unreadable ones): run ahead on a worker thread."""
        chunk, arrays, bad = [], [], []
        for f in batch:
            try:
                arrays.append(read_image(f))
                chunk.append(f)
            except ImageReadError as e:
                bad.append((f, e))
        return chunk, arrays, bad

    def save(f, img, d):
        if not args.no_save:
            write_image(save_dir / drawn[f], d.draw(img))
        if args.save_txt:
            write_text(save_dir / "labels" / labels[f], d.to_txt())

    bar = tqdm(total=len(images), desc="predict", unit="img", disable=len(images) < 2)
    # on a GPU, reading ahead and drawing / writing behind overlap the network
    pipelined = on_accelerator(model)
    with bar, BackgroundWriter(enabled=pipelined) as writer:
        for batch, (chunk, arrays, bad) in zip(batches, ordered_map(read_batch, batches,
                                                                    ahead=int(pipelined))):
            for f, e in bad:
                failed.append(str(f))
                log.warning("skipped %s", e)
            if arrays:
                dets = model.predict(arrays, batch_size=args.batch, **knobs)
                for f, img, d in zip(chunk, arrays, dets):
                    d.source = str(f)
                    n_dets += len(d)
                    rec = d.to_dict()
                    if not args.no_save:
                        rec["output"] = str(drawn[f])
                    if args.save_txt:
                        rec["labels"] = str(Path("labels") / labels[f])
                    records.append(rec)
                    # the writer thread gets host copies: no CUDA call off the main thread
                    writer.submit(save, f, img, d.numpy() if pipelined else d)
            bar.update(len(batch))
    for v in videos:
        n = _predict_video(model, v, save_dir, drawn[v], labels[v], knobs, records, args)
        if n is None:
            failed.append(str(v))
        else:
            n_dets += n
    if not records:
        raise UsageError("nothing could be read: " + ", ".join(failed))
    if args.save_json:
        write_json(save_dir / "predictions.json", records, indent=1)
    print(f"{len(records)} image(s)/frame(s), {n_dets} detection(s)"
          + (f", {len(failed)} unreadable skipped: {', '.join(failed)}" if failed else "")
          + (f"; results in {save_dir}" if writes else ""))
    return 0


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


def _predict_video(model, path: Path, save_dir: Path, out_name: Path, txt_name: Path,
                   knobs: dict, records: list, args) -> int | None:
    """Detections of every frame (drawn into `<save-dir>/<out_name>`, an mp4 written to a
    temporary name, checked frame by frame, then renamed); None when the video is unreadable."""
    import contextlib
    import itertools

    import cv2
    from tqdm import tqdm

    from ..atomic import WriteError, atomic_path, write_text
    from ..inference.prefetch import BackgroundWriter, on_accelerator, ordered_map
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        log.warning("skipped %s: not a readable video", path)
        return None
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    n, frame_idx, txt = 0, 0, []
    out = save_dir / out_name
    written = [0]

    def check(tmp):
        got = _count_frames(tmp)
        return None if got == written[0] else f"{got} of {written[0]} frames were written"

    def read_frames(_):  # the next batch of frames, read ahead on a worker thread
        frames = []
        while len(frames) < args.batch:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        return frames

    def put(frame, d):
        writer.write(d.draw(frame))
        written[0] += 1

    writer = None
    try:
        with contextlib.ExitStack() as stack:
            tmp = None if args.no_save else stack.enter_context(atomic_path(out, check=check))
            pipelined = on_accelerator(model)
            background = stack.enter_context(BackgroundWriter(enabled=pipelined))
            batches = stack.enter_context(contextlib.closing(
                ordered_map(read_frames, itertools.count(), ahead=int(pipelined))))
            with tqdm(total=total, desc=path.name, unit="frame") as bar:
                for frames in batches:
                    dets = model.predict(frames, batch_size=args.batch, **knobs) if frames else []
                    for frame, d in zip(frames, dets):
                        d.source = f"{path}#{frame_idx}"
                        n += len(d)
                        rec = d.to_dict()
                        if tmp is not None:
                            if writer is None:
                                h, w = frame.shape[:2]
                                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                                         fps, (w, h))
                                if not writer.isOpened():
                                    raise WriteError(out, "OpenCV cannot open an mp4 video writer")
                            background.submit(put, frame, d.numpy() if pipelined else d)
                            rec["output"] = f"{out_name}#{frame_idx}"
                        if args.save_txt:
                            txt += [f"{frame_idx} {line}" for line in d.to_txt().splitlines()]
                            rec["labels"] = str(Path("labels") / txt_name)
                        records.append(rec)
                        frame_idx += 1
                    bar.update(len(frames))
                    if len(frames) < args.batch:
                        break
            background.close()
            if writer is not None:
                writer.release()
            if frame_idx == 0:  # leaves nothing behind (the temporary file is removed)
                raise _NoFrames
    except _NoFrames:
        log.warning("skipped %s: no frame could be read", path)
        return None
    finally:
        cap.release()
    if args.save_txt:
        write_text(save_dir / "labels" / txt_name, "\n".join(txt) + ("\n" if txt else ""))
    return n


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("source", help="image, folder (images and videos, recursively), glob pattern "
                                  "or video file")
    add_model_args(p)
    p.add_argument("--score-thr", type=unit_float, default=0.3, help="keep detections above (default 0.3)")
    p.add_argument("--iou", type=unit_float, default=None, help="NMS IoU threshold (default: model's)")
    p.add_argument("--max-det", type=positive_int, default=None, help="detections per image (default: model's)")
    add_tile_args(p)
    add_speed_args(p)
    p.add_argument("--imgsz", type=image_size, default=None, help="network input size (default: model's)")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--save-dir", default="runs/predict",
                   help="outputs keep each source's path under the SOURCE folder (overwritten "
                        "when run again into the same folder)")
    p.add_argument("--save-txt", action="store_true",
                   help="labels/<path>.txt: label score x1 y1 x2 y2 (videos: frame first)")
    p.add_argument("--save-json", action="store_true",
                   help="predictions.json: every detection with its source and outputs")
    p.add_argument("--no-save", action="store_true", help="do not write drawn images/videos")
    p.set_defaults(func=cmd_predict)
