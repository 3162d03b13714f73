"""`rtmdet train` end to end: outputs next to the checkpoints, best.pth loads and validates, and a
bad --data path is a one-line error with exit code 2."""
from __future__ import annotations

import csv

import pytest

import rtmdet
from rtmdet.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from rtmdet.data.synthetic import make_shapes_splits
    root = tmp_path_factory.mktemp("shapes_cli")
    make_shapes_splits(root, {"train": 4, "val": 2}, image_size=(128, 128), scale_range=(0.2, 0.5))
    return root


def test_cli_train_one_epoch_writes_outputs_and_best_validates(data, tmp_path, capsys):
    rc = main(["train", "--data", str(data), "--model", "rtmdet-tiny", "--epochs", "1", "--batch", "2",
               "--imgsz", "128", "--workers", "0", "--device", "cpu", "--project", str(tmp_path),
               "--name", "run", "warmup_iters=1", "seed=1", "pretrained_backbone=false"])
    assert rc == 0
    run = tmp_path / "run"
    # 1 epoch of a recipe with 20 stage-2 epochs: all stage 2 (its first batch drawn)
    for f in ("last.pth", "best.pth", "config.yaml", "results.csv", "results.png", "train_batch_stage2.jpg",
              "labels.png"):
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert len(rows) == 1 and rows[0]["epoch"] == "1" and rows[0]["AP50"] != ""  # validated
    assert "imgsz: 128" in (run / "config.yaml").read_text()
    model = rtmdet.load(run / "best.pth")
    assert model.cfg.num_classes == 3 and model.class_names == ["rectangle", "ellipse", "triangle"]
    capsys.readouterr()
    assert main(["val", "--data", str(data), "--weights", str(run / "best.pth"), "--imgsz", "128"]) == 0
    assert "AP50" in capsys.readouterr().out


def test_cli_train_bad_data_path_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "missing"), "--epochs", "1", "--device", "cpu",
               "--project", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "missing" in err and "not found" in err
    assert not (tmp_path / "exp").exists()  # nothing written for a run that never started


def test_cli_train_bad_inputs_are_one_line_exit_2(data, tmp_path, capsys):
    import torch

    from rtmdet.checkpoint import atomic_save
    s_model = rtmdet.create("rtmdet-s")
    atomic_save({"state_dict": s_model.state_dict()}, tmp_path / "s.pth")
    common = ["--epochs", "1", "--device", "cpu", "--project", str(tmp_path), "--workers", "0"]
    # weights of another size
    assert main(["train", "--data", str(data), "--model", "rtmdet-tiny", "--weights",
                 str(tmp_path / "s.pth")] + common) == 2
    err = capsys.readouterr().err.strip()
    assert "are an rtmdet-s; model=rtmdet-tiny is another size" in err and len(err.splitlines()) == 1
    # an unknown model name
    assert main(["train", "--data", str(data), "--model", "rtmdet-huge"] + common) == 2
    assert "unknown model" in capsys.readouterr().err
    # an empty annotation file
    empty = tmp_path / "empty"
    (empty / "annotations").mkdir(parents=True)
    (empty / "annotations" / "instances_train.json").write_text("")
    assert main(["train", "--data", str(empty)] + common) == 2
    err = capsys.readouterr().err.strip()
    assert "instances_train.json" in err and len(err.splitlines()) == 1
    assert torch.load(tmp_path / "s.pth", weights_only=True)  # the inputs are untouched
