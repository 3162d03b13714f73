"""The `rtmdet` command: one sub-command per job (predict, models, ...)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("rtmdet")


class UsageError(Exception):
    """A bad argument: printed as one line, exit code 2."""


def _device(name: str | None) -> str:
    """The device to use: the one asked for (checked), else cuda when present, else cpu."""
    import torch
    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return name


def check_model_arg(args) -> str:
    """--model NAME or --weights PATH, validated before any slow work; returns the source."""
    from . import zoo
    src = getattr(args, "weights", None) or getattr(args, "model", None)
    if not src:
        raise UsageError("give --model NAME or --weights PATH")
    if getattr(args, "weights", None) and not Path(args.weights).is_file():
        raise UsageError(f"weights file not found: {args.weights}")
    if not getattr(args, "weights", None) and src.lower().replace("_", "-") not in zoo.ZOO:
        raise UsageError(f"unknown model {src!r}; known: {', '.join(zoo.ZOO)}")
    return src


def load_model_arg(args) -> "object":
    """--model NAME or --weights PATH -> a loaded model, or a one-line UsageError."""
    from . import zoo
    from .api import load
    from .checkpoint import CheckpointError
    src = check_model_arg(args)
    try:
        return load(src, device=_device(getattr(args, "device", None)))
    except (CheckpointError, zoo.DownloadError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


def unique_path(directory: Path, name: str) -> Path:
    """`directory/name`, or `stem_2.ext`... when a file of that name was already written."""
    out = directory / name
    k = 2
    while out.exists():
        out = directory / f"{Path(name).stem}_{k}{Path(name).suffix}"
        k += 1
    return out


# ---------------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    import cv2
    from tqdm import tqdm

    from .models.detector import ImageReadError, read_image
    from .sources import is_video, list_images

    check_model_arg(args)
    files = list_images(args.source)
    if not files:
        raise UsageError(f"no images or videos found at {args.source}")
    model = load_model_arg(args)
    knobs = dict(score_thr=args.score_thr, nms_iou=args.iou, max_per_img=args.max_det,
                 imgsz=args.imgsz)
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


# ---------------------------------------------------------------------------------- models
def cmd_models(args) -> int:
    from .zoo import ZOO
    rows = [("name", "size", "params(M)", "GMACs", "box AP", "mask AP", "url")]
    for e in ZOO.values():
        rows.append((e.name, "640", f"{e.params_m:.3f}", "-" if e.gmacs is None else f"{e.gmacs:.2f}",
                     f"{e.box_ap:.1f}", "-" if e.mask_ap is None else f"{e.mask_ap:.1f}", e.url))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


# ---------------------------------------------------------------------------------- val
def cmd_val(args) -> int:
    from .data.datasets import load_dataset
    from .eval.coco import format_table, save_coco_json
    from .eval.validate import evaluate_model

    check_model_arg(args)
    try:
        dataset = load_dataset(args.data, split=args.split, strict=args.strict)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if len(dataset) == 0:
        raise UsageError(f"{args.data}: no images to evaluate")
    model = load_model_arg(args)
    knobs = dict(score_thr=args.score_thr, nms_iou=args.iou, max_per_img=args.max_det,
                 imgsz=args.imgsz)
    try:
        metrics, dets = evaluate_model(model, dataset, args.batch, **knobs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(format_table(metrics, per_class=True))
    if "segm" in metrics:
        print("segm:")
        print(format_table(metrics["segm"], per_class=False))
    save_dir = Path(args.save_dir)
    if args.save_json or args.plots:
        save_dir.mkdir(parents=True, exist_ok=True)
    if args.save_json:
        out = save_coco_json(dets, save_dir / "detections.json", cat_ids=dataset.cat_ids)
        print(f"detections written to {out}")
    if args.plots:
        from .eval.coco import confusion_matrix
        from .eval.plots import plot_confusion_matrix, plot_pr_curves
        plot_pr_curves(metrics, save_dir / "pr_curves.png")
        plot_confusion_matrix(confusion_matrix(dataset, dets), dataset.class_names,
                              save_dir / "confusion_matrix.png")
        print(f"plots written to {save_dir}")
    return 0


# ---------------------------------------------------------------------------------- parser
def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="zoo name (see `rtmdet models`), downloaded once and cached")
    g.add_argument("--weights", help="path to a checkpoint (.pth)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtmdet", description="RTMDet detectors in plain PyTorch")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("source", help="image, folder, glob pattern or video file")
    _model_args(p)
    p.add_argument("--score-thr", type=float, default=0.3, help="keep detections above (default 0.3)")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: model's)")
    p.add_argument("--max-det", type=int, default=None, help="detections per image (default: model's)")
    p.add_argument("--imgsz", type=int, default=None, help="network input size (default 640)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--save-dir", default="runs/predict")
    p.add_argument("--save-txt", action="store_true", help="labels/<image>.txt: label score x1 y1 x2 y2")
    p.add_argument("--save-json", action="store_true", help="predictions.json with every detection")
    p.add_argument("--no-save", action="store_true", help="do not write drawn images/videos")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("val", help="COCO mAP of a model on a COCO-json or YOLO dataset")
    p.add_argument("--data", required=True, help="dataset folder, COCO .json or YOLO .yaml")
    p.add_argument("--split", default="val")
    _model_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--score-thr", type=float, default=None, help="default: model's (0.001)")
    p.add_argument("--iou", type=float, default=None, help="default: model's (0.65)")
    p.add_argument("--max-det", type=int, default=None, help="default: model's (300)")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--strict", action="store_true", help="any dataset problem is an error")
    p.add_argument("--save-json", action="store_true", help="write COCO-format detections")
    p.add_argument("--plots", action="store_true", help="PR curves and confusion matrix PNGs")
    p.add_argument("--save-dir", default="runs/val")
    p.set_defaults(func=cmd_val)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=cmd_models)
    # sub-commands that live beside their subject (imported here: they import this module)
    from .demo import add_demo_parser
    from .deploy.cli import add_bench_parser, add_export_parser
    from .train.cli import add_train_parser
    for add in (add_train_parser, add_export_parser, add_bench_parser, add_demo_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"rtmdet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
