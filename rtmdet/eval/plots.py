"""Plots (matplotlib, Agg backend): precision-recall curves, a confusion matrix, and what a
dataset's labels look like."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["pr_curves", "plot_pr_curves", "plot_confusion_matrix", "label_stats", "plot_labels"]


def _figure(figsize):
    """A figure on the Agg canvas, without pyplot (leaves the user's backend alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, **kw) -> Path:
    """`fig.savefig` (format from the suffix) written atomically (`rtmdet.atomic`)."""
    import io

    from ..atomic import write_bytes
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=(path.suffix[1:] or "png").lower(), **kw)
    return write_bytes(path, buf.getvalue())


def pr_curves(results: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Precision at each recall threshold, from `evaluate_coco` output (area 'all', max dets 100).

    Returns ``recall`` (R,), ``p50`` (K,R) at IoU 0.5, ``p5095`` (K,R) averaged over IoU 0.5:0.95,
    and the class means ``mean50``/``mean5095`` (R,). Entries without ground truth are nan.
    """
    prec = np.asarray(results["precision"], np.float64)[:, :, :, 0, -1]  # (T, R, K)
    prec = np.where(prec > -1, prec, np.nan)
    t50 = int(np.argmin(np.abs(np.asarray(results["iou_thrs"]) - 0.5)))
    p50 = prec[t50].T  # (K, R)
    with np.errstate(invalid="ignore"), _quiet():
        p5095 = np.nanmean(prec, axis=0).T
        mean50 = np.nanmean(p50, axis=0)
        mean5095 = np.nanmean(p5095, axis=0)
    return {"recall": np.asarray(results["rec_thrs"]), "p50": p50, "p5095": p5095, "mean50": mean50,
            "mean5095": mean5095}


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *a):
        return self._w.__exit__(*a)


def plot_pr_curves(results: Mapping[str, Any], path: str | os.PathLike, max_legend: int = 20) -> Path:
    """Draw per-class and mean PR curves at IoU 0.5 and 0.5:0.95 side by side; write a PNG."""
    c = pr_curves(results)
    names = list(results.get("class_names") or [str(i) for i in range(c["p50"].shape[0])])
    rows = {r["name"]: r for r in results.get("per_class", [])}
    fig = _figure((12, 5.5))
    axes = fig.subplots(1, 2)
    for ax, key, title, summ in ((axes[0], "p50", "IoU 0.5", "AP50"), (axes[1], "p5095", "IoU 0.5:0.95", "AP")):
        curves = c[key]
        legend = len(names) <= max_legend
        for k, name in enumerate(names):
            if np.all(np.isnan(curves[k])):
                continue
            ap = rows.get(name, {}).get(summ, float("nan"))
            ax.plot(c["recall"], curves[k], lw=1, alpha=0.7, label=f"{name} {ap:.3f}" if legend else None)
        overall = results.get("AP50" if key == "p50" else "AP", float("nan"))
        ax.plot(c["recall"], c["mean" + key[1:]], lw=3, color="blue", label=f"all classes {overall:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"Precision-recall, {title}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: list[str], path: str | os.PathLike, normalize: bool = True
) -> Path:
    """Draw a (C+1,C+1) confusion matrix from `confusion_matrix` (rows predicted, columns true, last =
    background). ``normalize`` divides each column by its total (share of each true class)."""
    m = np.asarray(matrix, np.float64)
    if normalize:
        m = m / np.maximum(m.sum(0, keepdims=True), 1)
    labels = list(class_names) + ["background"]
    n = len(labels)
    size = min(max(5, 0.45 * n + 2), 30)
    fig = _figure((size, size * 0.85))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        thr = m.max() / 2 if m.size else 0
        for i in range(n):
            for j in range(n):
                if matrix[i][j]:
                    ax.text(j, i, f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}", ha="center", va="center",
                            fontsize=7, color="white" if m[i, j] > thr else "black")
    ax.set(xlabel="true", ylabel="predicted", title="Confusion matrix" + (" (column-normalized)" if normalize else ""))
    fig.tight_layout()
    return save_figure(fig, path)


def label_stats(dataset) -> dict[str, Any]:
    """What a dataset's training labels are (crowd boxes left out, as training ignores them):
    ``counts`` (C,) instances per class, ``centres`` and ``sizes`` (n,2) box centre x, y and
    width, height as fractions of their image, ``images`` and ``background`` (images without a
    box)."""
    counts = np.zeros(len(dataset.class_names), np.int64)
    centres, sizes, background = [], [], 0
    for r in dataset.records:
        keep = ~np.asarray(r.iscrowd, bool) if len(r.iscrowd) == len(r.labels) else slice(None)
        boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)[keep]
        labels = np.asarray(r.labels, np.int64)[keep]
        if not len(labels):
            background += 1
            continue
        np.add.at(counts, labels, 1)
        wh = np.array([r.width, r.height], np.float64)
        centres.append((boxes[:, :2] + boxes[:, 2:]) / 2 / wh)
        sizes.append((boxes[:, 2:] - boxes[:, :2]) / wh)
    empty = np.zeros((0, 2))
    return {"counts": counts, "centres": np.concatenate(centres) if centres else empty,
            "sizes": np.concatenate(sizes) if sizes else empty, "images": len(dataset.records),
            "background": background}


def plot_labels(dataset, path: str | os.PathLike, max_classes: int = 80) -> Path:
    """`labels.png`: instances per class, where box centres fall and what sizes boxes have
    (both as fractions of the image): a glance that tells a class imbalance, boxes bunched in a
    corner or labels in the wrong units (all boxes tiny or image-sized) before training."""
    st = label_stats(dataset)
    fig = _figure((15, 4.6))
    ax_c, ax_xy, ax_wh = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.6, 1, 1]})
    counts, names = st["counts"][:max_classes], list(dataset.class_names)[:max_classes]
    ax_c.bar(range(len(counts)), counts, color="#4c72b0")
    ax_c.set_xticks(range(len(counts)), names, rotation=90, fontsize=7 if len(counts) > 20 else 9)
    more = f" (first {max_classes} of {len(st['counts'])} classes)" if len(st["counts"]) > max_classes else ""
    ax_c.set(ylabel="instances", title=f"{int(st['counts'].sum())} instances in {st['images']} images, "
             f"{st['background']} without a box{more}")
    for ax, xy, (xl, yl), title in ((ax_xy, st["centres"], ("x", "y"), "box centres"),
                                    (ax_wh, st["sizes"], ("width", "height"), "box sizes")):
        ax.hist2d(xy[:, 0], xy[:, 1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"{xl} / image width", ylabel=f"{yl} / image height",
               title=title)
        ax.set_aspect("equal")
    ax_xy.invert_yaxis()  # image coordinates: y grows downwards
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
