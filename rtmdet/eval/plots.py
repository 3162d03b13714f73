"""Evaluation plots (matplotlib, Agg backend): precision-recall curves and a confusion matrix."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["pr_curves", "plot_pr_curves", "plot_confusion_matrix"]


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
