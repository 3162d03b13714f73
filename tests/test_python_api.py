"""Training and evaluation from Python (`rtmdet.train.train`, `rtmdet.evaluate`): the same runs,
files and numbers as `rtmdet train` / `rtmdet val`, and the same clear errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import rtmdet
from helpers import ROOT, run_cli, shapes_data
from rtmdet.train import TrainConfig, TrainResult, train
from rtmdet.train.trainer import NothingToResume

FAST = dict(epochs=1, batch=2, imgsz=64, workers=0, device="cpu", plots=False,
            pretrained_backbone=False, speed_probe=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished 1-epoch run started from Python with Path arguments."""
    root = tmp_path_factory.mktemp("pyapi")
    data = shapes_data(root / "data", train=2, val=2)
    return train(data=data, project=root / "runs", **FAST), data


def test_train_returns_the_run(run):
    r, _ = run
    assert isinstance(r, TrainResult)
    assert r.save_dir.name == "exp" and r.best.is_file() and r.last.is_file()
    assert (r.save_dir / "config.yaml").is_file()
    # the returned validation is the one logged for the last epoch, and what best.pth holds
    rows = (r.save_dir / "results.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    logged = {k: float(v) for k, v in zip(header, last) if k in ("AP", "AP50", "AP75")}
    assert set(r.metrics) == {"AP", "AP50", "AP75"}
    assert r.metrics == pytest.approx(logged, abs=1e-6)
    assert r.best_fitness == pytest.approx(r.metrics["AP"])
    assert rtmdet.load(r.best).test_cfg.imgsz == 64


def test_train_settings_are_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown training setting 'epoch'; did you mean 'epochs'"):
        train(data=tmp_path, epoch=3)
    with pytest.raises(ValueError, match="lr=-1.0"):
        train(data=tmp_path, project=tmp_path / "runs", lr=-1, **FAST)
    with pytest.raises(FileNotFoundError):
        train(data=tmp_path / "nothing", project=tmp_path / "runs", **FAST)
    assert not (tmp_path / "runs").exists()


def test_resume_from_python_keeps_the_runs_rules(run):
    r, _ = run
    with pytest.raises(NothingToResume, match="already finished"):
        train(resume=r.last, workers=0)
    with pytest.raises(ValueError, match="cannot change epochs"):
        train(resume=r.last, epochs=3)
    with pytest.raises(NothingToResume, match="already finished"):  # project/name/last.pth
        train(resume=True, project=r.save_dir.parent, name=r.save_dir.name)


def test_train_with_a_config_object(tmp_path):
    data = shapes_data(tmp_path / "data", train=2, val=1)
    cfg = TrainConfig(data=str(data), project=str(tmp_path / "runs"), name="cfg", **FAST)
    r = train(cfg, val_interval=1)
    assert r.save_dir == tmp_path / "runs" / "cfg" and r.best.is_file()


def test_train_prints_its_log_unless_told_not_to(tmp_path):
    """Without logging configured (a script, a notebook) the run's log is shown, as `rtmdet train`
    shows it; `verbose=False` keeps quiet; the handler is removed afterwards."""
    data = shapes_data(tmp_path / "data", train=2, val=1)
    code = (
        "import logging, sys\n"
        "from rtmdet.train import train\n"
        f"kw = dict(data={str(data)!r}, project={str(tmp_path / 'runs')!r}, **{FAST!r})\n"
        "train(**kw)\n"
        "assert not logging.getLogger('rtmdet').handlers\n"
        "print('@@quiet@@', file=sys.stderr, flush=True)\n"
        "train(verbose=False, **kw)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                         "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    loud, quiet = p.stderr.split("@@quiet@@\n")
    assert "INFO training rtmdet-tiny" in loud and "INFO epoch 1/" in loud
    assert "INFO finished: " in loud and "(best.pth: epoch 1, AP " in loud
    assert "INFO" not in quiet


def test_evaluate_is_rtmdet_val(tiny3_weights, tmp_path):
    """`rtmdet.evaluate` prints, saves and scores what `rtmdet val` does, from a path or from
    loaded objects."""
    from rtmdet.data.datasets import load_dataset
    data = shapes_data(tmp_path / "data", train=1, val=3)
    ev = rtmdet.evaluate(tiny3_weights, data, device="cpu", progress=False)
    cli = run_cli(["val", "--data", data, "--weights", tiny3_weights, "--device", "cpu",
                   "--save-json", "--save-dir", tmp_path / "cli"])
    assert cli.returncode == 0, cli.stderr
    assert ev.table() in cli.stdout and str(ev) == ev.table()
    saved = json.loads(ev.save_json(tmp_path / "py").read_text())
    by_cli = json.loads((tmp_path / "cli" / "detections.json").read_text())
    # the CLI folds BatchNorm into the convs (Detector): the same detections up to float rounding
    assert len(saved) == len(by_cli) > 0
    for a, b in zip(saved, by_cli):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
    assert set(ev.summary) == {"AP", "AP50", "AP75"} and ev.summary["AP"] == ev.metrics["bbox"]["AP"]
    plots = ev.save_plots(tmp_path / "py")
    assert [Path(p).name for p in plots] == ["pr_curves.png", "confusion_matrix.png"]

    model = rtmdet.load(tiny3_weights)
    same = rtmdet.evaluate(model, load_dataset(data, split="val"), progress=False)
    assert same.table() == ev.table()
    # a knob reaches predict: nothing scores above 1, so no detections and AP -1 (no results)
    none = rtmdet.evaluate(model, data, score_thr=1.0, progress=False)
    assert all(len(r["scores"]) == 0 for r in none.records)


def test_evaluate_errors(tiny3_weights, tmp_path):
    data = shapes_data(tmp_path / "data", train=1, val=1)
    model = rtmdet.load(tiny3_weights)
    with pytest.raises(ValueError, match="no images"):
        rtmdet.evaluate(model, shapes_data(tmp_path / "empty", train=1, val=0), progress=False)
    with pytest.raises(ValueError, match="model predicts 80 classes but the dataset has 3"):
        rtmdet.evaluate(rtmdet.create("rtmdet-tiny"), data, progress=False)
    with pytest.raises(ValueError, match="score_thr"):
        rtmdet.evaluate(model, data, score_thr=2, progress=False)
    with pytest.raises(FileNotFoundError):
        rtmdet.evaluate(tmp_path / "none.pth", data)


def test_a_run_ends_with_the_best_validations_table(run):
    """val_best.txt is the table `rtmdet.evaluate` gives for best.pth at the run's validation
    settings: the report is of the checkpoint it names, with no second pass over the data."""
    r, data = run
    text = (r.save_dir / "val_best.txt").read_text()
    assert text.startswith(f"best.pth: epoch {r.best_epoch}\n")
    ev = rtmdet.evaluate(r.best, data, device="cpu", progress=False, score_thr=0.001)
    assert text.split("\n", 1)[1].strip() == ev.table().strip()
