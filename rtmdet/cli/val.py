"""`rtmdet val`: the family's metrics (COCO bbox/segm) of a checkpoint or an exported model."""
from __future__ import annotations

from pathlib import Path

from .common import (UsageError, add_model_args, check_model_arg, image_size, open_model,
                     positive_int, unit_float)


def cmd_val(args) -> int:
    from ..atomic import ensure_dir
    from ..data.datasets import load_dataset
    from ..eval.coco import format_table, save_coco_json
    from ..eval.validate import evaluate_model

    check_model_arg(args)
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
                 imgsz=args.imgsz)
    try:
        metrics, dets = evaluate_model(model, dataset, args.batch, **knobs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for i, (kind, m) in enumerate(metrics.items()):
        print(("" if i == 0 else f"{kind}:\n") + format_table(m, per_class=i == 0))
    if args.save_json:
        out = save_coco_json(dets, save_dir / "detections.json", cat_ids=dataset.cat_ids)
        print(f"detections written to {out}")
    if args.plots:
        from ..eval.coco import confusion_matrix
        from ..eval.plots import plot_confusion_matrix, plot_pr_curves
        plot_pr_curves(next(iter(metrics.values())), save_dir / "pr_curves.png")
        plot_confusion_matrix(confusion_matrix(dataset, dets), dataset.class_names,
                              save_dir / "confusion_matrix.png")
        print(f"plots written to {save_dir}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("val", help="COCO mAP of a model on a COCO-json or YOLO dataset")
    p.add_argument("--data", required=True, help="dataset folder, COCO .json or YOLO .yaml")
    p.add_argument("--split", default="val")
    add_model_args(p)
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--score-thr", type=unit_float, default=None, help="default: model's (0.001)")
    p.add_argument("--iou", type=unit_float, default=None, help="default: model's (0.65)")
    p.add_argument("--max-det", type=positive_int, default=None, help="default: model's (300)")
    p.add_argument("--imgsz", type=image_size, default=None)
    p.add_argument("--strict", action="store_true", help="any dataset problem is an error")
    p.add_argument("--save-json", action="store_true", help="write COCO-format detections")
    p.add_argument("--plots", action="store_true", help="PR curves and confusion matrix PNGs")
    p.add_argument("--save-dir", default="runs/val")
    p.set_defaults(func=cmd_val)
