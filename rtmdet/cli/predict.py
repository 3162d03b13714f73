"""`rtmdet predict`: images, folders, globs and videos -> drawn pictures, txt and json."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .common import (UsageError, add_model_args, add_tile_args, check_model_arg, image_size,
                     open_model, positive_int, tile_knobs, unique_path, unit_float)

log = logging.getLogger("rtmdet")


def cmd_predict(args) -> int:
    import cv2
    from tqdm import tqdm

    from ..data.images import ImageReadError, read_image
    from ..sources import is_video, list_images

    check_model_arg(args)
    tiling = tile_knobs(args)
    files = list_images(args.source)
    if not files:
        raise UsageError(f"no images or videos found at {args.source}")
    model = open_model(args)
    knobs = dict(score_thr=args.score_thr, nms_iou=args.iou, max_per_img=args.max_det,
                 imgsz=args.imgsz, **tiling)
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    records, failed, n_dets = [], [], 0
    images = [f for f in files if not is_video(f)]
    videos = [f for f in files if is_video(f)]
    bar = tqdm(total=len(images), desc="predict", unit="img", disable=len(images) < 2)
    for start in range(0, len(images), args.batch):
        chunk, arrays = [], []
        for f in images[start:start + args.batch]:
            try:
                arrays.append(read_image(f))
                chunk.append(f)
            except ImageReadError as e:
                failed.append(str(f))
                log.warning("skipped %s", e)
        if arrays:
            dets = model.predict(arrays, batch_size=args.batch, **knobs)
            for f, img, d in zip(chunk, arrays, dets):
                d.source = str(f)
                n_dets += len(d)
                if not args.no_save:
                    cv2.imwrite(str(unique_path(save_dir, f.name)), d.draw(img))
                if args.save_txt:
                    (save_dir / "labels").mkdir(exist_ok=True)
                    (save_dir / "labels" / f"{f.stem}.txt").write_text(d.to_txt())
                records.append(d.to_dict())
        bar.update(len(images[start:start + args.batch]))
    bar.close()
    for v in videos:
        n_dets += _predict_video(model, v, save_dir, knobs, records, args)
    if args.save_json:
        (save_dir / "predictions.json").write_text(json.dumps(records, indent=1))
    print(f"{len(records)} image(s)/frame(s), {n_dets} detection(s)"
          + (f", {len(failed)} unreadable skipped: {', '.join(failed)}" if failed else "")
          + f"; results in {save_dir}")
    return 0


def _predict_video(model, path: Path, save_dir: Path, knobs: dict, records: list, args) -> int:
    import cv2
    from tqdm import tqdm
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        log.warning("skipped %s: not a readable video", path)
        return 0
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, n, frame_idx = None, 0, 0
    with tqdm(total=total, desc=path.name, unit="frame") as bar:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            d = model.predict(frame, **knobs)
            d.source = f"{path}#{frame_idx}"
            n += len(d)
            if not args.no_save:
                if writer is None:
                    h, w = frame.shape[:2]
                    out = unique_path(save_dir, path.stem + ".mp4")
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(d.draw(frame))
            records.append(d.to_dict())
            frame_idx += 1
            bar.update(1)
    cap.release()
    if writer is not None:
        writer.release()
    return n


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("source", help="image, folder, glob pattern or video file")
    add_model_args(p)
    p.add_argument("--score-thr", type=unit_float, default=0.3, help="keep detections above (default 0.3)")
    p.add_argument("--iou", type=unit_float, default=None, help="NMS IoU threshold (default: model's)")
    p.add_argument("--max-det", type=positive_int, default=None, help="detections per image (default: model's)")
    add_tile_args(p)
    p.add_argument("--imgsz", type=image_size, default=None, help="network input size (default: model's)")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--save-dir", default="runs/predict")
    p.add_argument("--save-txt", action="store_true", help="labels/<image>.txt: label score x1 y1 x2 y2")
    p.add_argument("--save-json", action="store_true", help="predictions.json with every detection")
    p.add_argument("--no-save", action="store_true", help="do not write drawn images/videos")
    p.set_defaults(func=cmd_predict)
