"""Exports and every backend take the input size the checkpoint carries (its test size, what it
was trained at) unless told otherwise."""
from __future__ import annotations

import numpy as np
import torch

import rtmdet
from rtmdet.api import checkpoint_meta
from rtmdet.checkpoint import atomic_save
from rtmdet.cli import main
from rtmdet.deploy.onnx import read_metadata


def test_export_and_backends_use_the_checkpoints_size(tmp_path, capsys):
    torch.manual_seed(0)
    m = rtmdet.create("rtmdet-tiny", num_classes=3)
    m.test_cfg.imgsz = 192  # as a run trained with --imgsz 192 saves it
    atomic_save({"meta": checkpoint_meta(m), "state_dict": m.state_dict()}, tmp_path / "best.pth")
    assert main(["export", "--weights", str(tmp_path / "best.pth"), "--output", str(tmp_path / "m.onnx")]) == 0
    assert "static 1x3x192x192" in capsys.readouterr().out
    assert read_metadata(tmp_path / "m.onnx")["imgsz"] == [192, 192]
    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    a = rtmdet.Detector(tmp_path / "best.pth").predict(img, score_thr=0.0)
    b = rtmdet.Detector(tmp_path / "m.onnx").predict(img, score_thr=0.0)
    assert len(a) == len(b)
    torch.testing.assert_close(b.boxes, a.boxes, atol=0.5, rtol=0)
    # told otherwise: honoured; a dynamic graph defaults to the checkpoint's size too
    assert main(["export", "--weights", str(tmp_path / "best.pth"), "--output", str(tmp_path / "d.onnx"),
                 "--imgsz", "128", "--dynamic"]) == 0
    assert read_metadata(tmp_path / "d.onnx")["imgsz"] == [128, 128]
    from rtmdet.deploy.onnx import export_onnx
    export_onnx(m, tmp_path / "api.onnx", dynamic=True)
    assert rtmdet.Detector(tmp_path / "api.onnx").backend.input_size() == (192, 192)
