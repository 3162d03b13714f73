"""Outputs are written atomically (`rtmdet.atomic`): a read-only folder or a disk that fills up
half-way is one line and exit 2, and never leaves a partial file under a final name."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.atomic import WriteError, atomic_path, write_image, write_json
from rtmdet.checkpoint import atomic_save
from rtmdet.cli import main
from helpers import disk_full_after, run_cli


@pytest.fixture
def weights(tiny3_weights):
    return tiny3_weights


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(d / f"im{i}.png"), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    return d


def _leftovers(folder):
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def test_helpers_replace_whole_files_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    write_json(out, {"old": True})
    disk_full_after(monkeypatch, 10, match=str(tmp_path))
    with pytest.raises(WriteError, match=r"r\.json.*No space left"):
        write_json(out, {"new": list(range(100))})
    assert json.loads(out.read_text()) == {"old": True}
    assert _leftovers(tmp_path) == []
    with pytest.raises(WriteError, match="encode"):
        write_image(tmp_path / "x.nope", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(WriteError, match="nothing was written"):
        with atomic_path(tmp_path / "v.mp4"):
            pass  # a writer that silently wrote nothing
    assert not (tmp_path / "v.mp4").exists() and _leftovers(tmp_path) == []


def test_files_keep_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_save({"x": torch.zeros(1)}, tmp_path / "last.pth")
        write_json(tmp_path / "a.json", [])
    finally:
        os.umask(old)
    assert oct((tmp_path / "last.pth").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "a.json").stat().st_mode & 0o777) == oct(0o644)


def test_predict_into_a_read_only_folder_is_exit_2(weights, images, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    r = run_cli(["predict", images, "--weights", weights, "--save-dir", out, "--save-txt"],
                read_only=out)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(err) == 1 and str(out) in err[0], err
    assert "read-only" in err[0] or "permission denied" in err[0], err  # as root / as a user
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("pipelined", [False, True])
def test_predict_disk_full_half_way_is_exit_2_and_no_partial_picture(weights, images, tmp_path,
                                                                     monkeypatch, capsys,
                                                                     pipelined):
    import rtmdet.inference.prefetch as prefetch
    monkeypatch.setattr(prefetch, "on_accelerator", lambda model: pipelined)  # writes on a thread
    out = tmp_path / "out"
    one = len(cv2.imencode(".png", cv2.imread(str(images / "im0.png")))[1]) * 2
    disk_full_after(monkeypatch, one, match=str(out))
    rc = main(["predict", str(images), "--weights", str(weights), "--save-dir", str(out),
               "--score-thr", "0.5"])
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if "predict:" in line and "%|" not in line]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "No space left" in lines[0] and str(out) in lines[0], err
    written = sorted(out.iterdir())
    assert 1 <= len(written) < 4 and _leftovers(out) == []
    for p in written:  # what is there under a final name is a whole picture
        assert cv2.imread(str(p)).shape == (64, 80, 3)


def test_export_disk_full_keeps_the_old_file(weights, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    disk_full_after(monkeypatch, 100_000, match=str(tmp_path))
    rc = main(["export", "--weights", str(weights), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "No space left" in err[0] and "m.onnx" in err[0], err
    assert out.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_export_into_an_unwritable_place_fails_before_exporting(weights, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc = main(["export", "--weights", str(weights), "--output", str(tmp_path / "file" / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(tmp_path / "file") in err[0], err
    # --output naming a folder: the file goes inside it
    (tmp_path / "dir").mkdir()
    assert main(["export", "--weights", str(weights), "--output", str(tmp_path / "dir")]) == 0
    assert (tmp_path / "dir" / "m.onnx").stat().st_size > 10_000


def test_checkpoint_disk_full_keeps_the_old_last_pth(tmp_path, monkeypatch, capsys):
    from rtmdet.data.synthetic import make_shapes_splits
    from rtmdet.train.config import TrainConfig
    from rtmdet.train.trainer import Trainer
    make_shapes_splits(tmp_path / "ds", {"train": 2, "val": 1}, image_size=(64, 64))
    cfg = TrainConfig(data=str(tmp_path / "ds"), epochs=2, batch=2, imgsz=64, workers=0,
                      device="cpu", pipeline="light", project=str(tmp_path / "runs"),
                      plots=False, pretrained_backbone=False, val_interval=5)
    run = tmp_path / "runs" / "exp"

    def fill_disk_after_epoch_1(trainer):
        if (run / "last.pth").exists():
            disk_full_after(monkeypatch, 4096, match=str(run))

    tr = Trainer(cfg, callbacks=[fill_disk_after_epoch_1])
    with pytest.raises(WriteError, match=r"last\.pth: No space left"):
        tr.train()
    assert torch.load(run / "last.pth", weights_only=False)["epoch"] == 1
    assert _leftovers(run) == []


def test_openvino_ir_is_replaced_whole_or_not_at_all(weights, tmp_path, monkeypatch):
    """The .xml and its .bin are written beside the target and renamed only when both are
    complete: a writer failing half-way keeps the previous pair."""
    pytest.importorskip("openvino")
    from rtmdet.deploy.openvino import write_ov_model
    from rtmdet.inference.openvino_backend import import_openvino
    ov = import_openvino()
    (tmp_path / "m.xml").write_text("old xml")
    (tmp_path / "m.bin").write_bytes(b"old bin")
    real = ov.save_model

    def half_way(model, path, **kw):
        real(model, path, **kw)
        with open(path[:-4] + ".bin", "r+b") as f:
            f.truncate(10)
        raise OSError(28, "No space left on device")

    from rtmdet.deploy.onnx import export_onnx
    onnx_path = export_onnx(rtmdet.load(weights), tmp_path / "src" / "m.onnx")
    model = ov.convert_model(str(onnx_path))
    monkeypatch.setattr(ov, "save_model", half_way)
    with pytest.raises(WriteError, match="No space left"):
        write_ov_model(model, tmp_path / "m.xml", {"nms": False})
    assert (tmp_path / "m.xml").read_text() == "old xml" and (tmp_path / "m.bin").read_bytes() == b"old bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "src"]
    monkeypatch.setattr(ov, "save_model", real)
    write_ov_model(model, tmp_path / "m.xml", {"nms": False})
    assert (tmp_path / "m.bin").stat().st_size > 1000 and "old" not in (tmp_path / "m.xml").read_text()
