"""`rtmdet val`: the family's metrics (COCO bbox/segm AP; DOTA mAP for rotated models) of a
checkpoint or an exported model, printed by the family."""
from __future__ import annotations

from pathlib import Path

from .common import (UsageError, add_model_args, add_speed_args, add_tile_args, check_inference,
                     check_model_arg, image_size, open_model, positive_int, tile_knobs, unit_float)


def cmd_val(args) -> int:
    from ..atomic import ensure_dir
    from ..data.datasets import load_dataset
    from ..eval.validate import Evaluation, evaluate_model

    check_model_arg(args)
    tiling = tile_knobs(args)
    try:
        dataset = load_dataset(args.data, split=args.split, strict=args.strict)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if len(dataset) == 0:
        raise UsageError(f"{args.data}: no images to evaluate")
    save_dir = Path(args.save_dir)
    if args.save_json or args.plots:  # an unwritable folder is found before the evaluation
        ensure_dir(save_dir)
    model = open_model(args)
    knobs = dict(score_thr=args.score_thr, nms_iou=args.iou, max_per_img=args.max_det,
                 imgsz=args.imgsz, **tiling)
    check_inference(model, knobs)
    try:
        metrics, records = evaluate_model(model, dataset, args.batch, **knobs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    result = Evaluation(metrics, records, dataset, model.family)
    print(result.table())
    if args.save_json:
        print(f"detections written to {result.save_json(save_dir)}")
    if args.plots:
        written = result.save_plots(save_dir)
        print(f"plots written to {save_dir}" if written else
              f"--plots: no plots for {model.family.name} models (the table above is the result)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("val", help="mAP of a model on a COCO-json, YOLO or DOTA/YOLO-OBB dataset")
    p.add_argument("--data", required=True,
                   help="dataset folder (COCO, YOLO, YOLO-OBB, DOTA images/ + labelTxt/), "
                        "COCO .json or YOLO .yaml")
    p.add_argument("--split", default="val")
    add_model_args(p)
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--score-thr", type=unit_float, default=None, help="default: model's (0.001)")
    p.add_argument("--iou", type=unit_float, default=None, help="default: model's (0.65)")
    p.add_argument("--max-det", type=positive_int, default=None, help="default: model's (300)")
    add_tile_args(p)
    add_speed_args(p)
    p.add_argument("--imgsz", type=image_size, default=None)
    p.add_argument("--strict", action="store_true", help="any dataset problem is an error")
    p.add_argument("--save-json", action="store_true", help="write detections.json (COCO results; "
                   "rotated models: polygons and rotated boxes)")
    p.add_argument("--plots", action="store_true", help="PR curves and confusion matrix PNGs "
                   "(COCO-style models)")
    p.add_argument("--save-dir", default="runs/val")
    p.set_defaults(func=cmd_val)
