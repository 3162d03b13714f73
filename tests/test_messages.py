"""What a user is told: a file that is not a checkpoint says what it is not (and where an
exported model runs), never torch's advice to unpickle it with weights_only=False; PIL images
are accepted by predict."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.checkpoint import CheckpointError, safe_load
from rtmdet.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("notckpt")
    rng = np.random.default_rng(0)
    out = {"random": d / "random.pth", "text": d / "notes.pth", "empty": d / "empty.pth",
           "onnx": d / "model.onnx", "engine": d / "model.engine", "xml": d / "model.xml",
           "truncated": d / "trunc.pth"}
    data = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    out["random"].write_bytes(b"\x13" + data)
    out["text"].write_text("epoch,loss\n1,0.5\n")
    out["empty"].write_bytes(b"")
    for k in ("onnx", "engine", "xml"):
        out[k].write_bytes(b"\x08\x07" + data)
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, d / "ok.pth")
    out["truncated"].write_bytes((d / "ok.pth").read_bytes()[:500])
    return out


@pytest.mark.parametrize("kind,says", [
    ("random", "not a PyTorch checkpoint (binary data"), ("text", "not a PyTorch checkpoint (a text file)"),
    ("empty", "not a PyTorch checkpoint (an empty file)"),
    ("truncated", "not a PyTorch checkpoint (unreadable: PytorchStreamReader failed reading zip archive"),
    ("onnx", "is an exported ONNX model, not a PyTorch checkpoint: run it with rtmdet.Detector("),
    ("engine", "is a TensorRT engine, not a PyTorch checkpoint: run it with rtmdet.Detector("),
    ("xml", "is an OpenVINO model, not a PyTorch checkpoint"),
])
def test_what_a_file_is_not(files, kind, says):
    with pytest.raises(CheckpointError) as e:
        safe_load(files[kind])
    msg = str(e.value)
    assert says in msg and len(msg.splitlines()) == 1
    assert "weights_only" not in msg and "trusted" not in msg
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        rtmdet.load(files[kind])


def test_cli_says_it_in_one_line(files, tmp_path, capsys):
    import cv2

    from rtmdet.data.synthetic import make_shapes_splits
    make_shapes_splits(tmp_path / "ds", {"train": 1, "val": 1}, image_size=(64, 64))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    assert main(["predict", str(tmp_path / "a.png"), "--weights", str(files["random"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a PyTorch checkpoint" in err[0] and "weights_only" not in err[0]
    assert main(["train", "--data", str(tmp_path / "ds"), "--weights", str(files["onnx"]),
                 "--project", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rtmdet.Detector" in err[0] and "--weights" in err[0], err


def test_predict_accepts_pil_images():
    from PIL import Image
    torch.manual_seed(0)
    m = rtmdet.create("rtmdet-tiny", num_classes=3)
    m.test_cfg.imgsz = 64
    bgr = np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    pil = Image.fromarray(bgr[..., ::-1].copy())  # PIL holds RGB
    ref = m.predict(bgr, score_thr=0.0)
    one = m.predict(pil, score_thr=0.0)
    assert isinstance(one, rtmdet.Detections) and one.image_shape == (48, 80)
    torch.testing.assert_close(one.boxes, ref.boxes)
    both = m.predict([pil, pil.convert("L"), pil.convert("RGBA")], score_thr=0.0)
    assert len(both) == 3 and all(d.image_shape == (48, 80) for d in both)
    torch.testing.assert_close(both[2].boxes, ref.boxes)  # alpha dropped
