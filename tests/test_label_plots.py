"""`labels.png` of a training run: the label statistics it shows, checked on a dataset whose
numbers are known, and the picture itself."""
from __future__ import annotations

import numpy as np

from rtmdet.data.records import DetectionDataset, ImageRecord
from rtmdet.eval.plots import label_stats, plot_labels


def _dataset():
    a = ImageRecord("a.jpg", 200, 100, 1, boxes=np.array([[0, 0, 100, 50], [150, 50, 200, 100]], np.float32),
                    labels=np.array([0, 2]), iscrowd=np.array([False, False]))
    # a crowd region: ignored by training, left out of the statistics
    b = ImageRecord("b.jpg", 100, 100, 2, boxes=np.array([[10, 20, 30, 60], [0, 0, 100, 100]], np.float32),
                    labels=np.array([2, 1]), iscrowd=np.array([False, True]))
    c = ImageRecord("c.jpg", 50, 50, 3)  # background
    return DetectionDataset([a, b, c], ["x", "y", "z"], [1, 2, 3])


def test_label_stats_of_a_known_dataset():
    st = label_stats(_dataset())
    assert st["counts"].tolist() == [1, 0, 2]
    assert st["images"] == 3 and st["background"] == 1
    np.testing.assert_allclose(st["centres"], [[0.25, 0.25], [0.875, 0.75], [0.2, 0.4]])
    np.testing.assert_allclose(st["sizes"], [[0.5, 0.5], [0.25, 0.5], [0.2, 0.4]])


def test_plot_labels_writes_a_png(tmp_path):
    import cv2
    path = plot_labels(_dataset(), tmp_path / "labels.png")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] > img.shape[0] > 300
    # a dataset of background images only still plots (empty histograms)
    empty = DetectionDataset([ImageRecord("c.jpg", 50, 50, 3)], ["x"], [1])
    assert cv2.imread(str(plot_labels(empty, tmp_path / "empty.png"))) is not None


def test_many_classes_are_cut_to_a_readable_chart(tmp_path):
    n = 120
    recs = [ImageRecord(f"{i}.jpg", 10, 10, i, boxes=np.array([[0, 0, 5, 5]], np.float32),
                        labels=np.array([i]), iscrowd=np.array([False])) for i in range(n)]
    ds = DetectionDataset(recs, [f"c{i}" for i in range(n)], list(range(n)))
    assert plot_labels(ds, tmp_path / "many.png").is_file()
    assert label_stats(ds)["counts"].sum() == n
