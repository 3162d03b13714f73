"""Evaluation: COCO metrics (faster-coco-eval), per-class AP, PR curves, confusion matrix."""
from .coco import METRIC_NAMES, confusion_matrix, dataset_to_coco, evaluate_coco, format_table, save_coco_json, to_coco_results
from .plots import plot_confusion_matrix, plot_pr_curves, pr_curves

__all__ = [
    "METRIC_NAMES", "confusion_matrix", "dataset_to_coco", "evaluate_coco", "format_table", "save_coco_json",
    "to_coco_results", "plot_confusion_matrix", "plot_pr_curves", "pr_curves",
]
