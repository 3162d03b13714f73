"""Early stopping (`patience`): the run ends at the first validation that finds no better model
in `patience` epochs, keeps best.pth from the best one, and a resume respects the stop. The
validation is scripted (a sequence of AP values) so the stopping epoch is known in advance."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import ROOT, shapes_data, tiny_train_cfg
from rtmdet.checkpoint import safe_load
from rtmdet.train import train
from rtmdet.train.trainer import NothingToResume, Trainer


def scripted(monkeypatch, aps):
    """Trainer.validate returns these APs in turn; the epochs it was called at are recorded."""
    seq, calls = iter(aps), []

    def validate(self):
        calls.append(len(calls))
        return {"AP": next(seq), "AP50": 0.0, "AP75": 0.0}
    monkeypatch.setattr(Trainer, "validate", validate)
    return calls


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("patience") / "data", train=2, val=1)


def epochs_logged(run):
    with open(run / "results.csv") as f:
        return [(int(r["epoch"]), r["AP"]) for r in csv.DictReader(f)]


def test_stops_patience_epochs_after_the_best(data, tmp_path, monkeypatch):
    scripted(monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.9, 0.9, 0.9, 0.9])
    r = train(tiny_train_cfg(data, tmp_path, epochs=8, val_interval=1, patience=2, pipeline="light"))
    # best at epoch 2 (0.3); epochs 3 and 4 are no better: stop after epoch 4, before the 0.9
    assert r.stopped_early and r.best_epoch == 2 and r.best_fitness == pytest.approx(0.3)
    assert [e for e, _ in epochs_logged(r.save_dir)] == [1, 2, 3, 4]
    assert r.metrics["AP"] == pytest.approx(0.25)
    last, best = safe_load(r.last), safe_load(r.best)
    assert (last["epoch"], last["best_epoch"], last["stopped_early"]) == (4, 2, True)
    assert best["epoch"] == 2

    # resuming with the same patience has nothing to do; a larger one trains on from epoch 5,
    # still counting from epoch 2: patience=3 would stop again after epoch 5 (no better)
    with pytest.raises(NothingToResume, match="stopped early at epoch 4.*larger patience"):
        train(resume=r.last)
    scripted(monkeypatch, [0.2, 0.5, 0.4, 0.4])
    again = train(resume=r.last, patience=4)
    assert [e for e, _ in epochs_logged(r.save_dir)] == list(range(1, 9))
    assert not again.stopped_early and again.best_epoch == 6 and again.best_fitness == pytest.approx(0.5)


def test_only_a_validation_can_stop_the_run(data, tmp_path, monkeypatch):
    """val_interval=2: epoch 3 is past the patience but not validated; the stop comes at 4."""
    calls = scripted(monkeypatch, [0.5, 0.4, 0.4])
    r = train(tiny_train_cfg(data, tmp_path, epochs=6, val_interval=2, patience=1, pipeline="light"))
    assert r.stopped_early and [e for e, _ in epochs_logged(r.save_dir)] == [1, 2, 3, 4]
    assert len(calls) == 2 and r.best_epoch == 2


def test_patience_zero_and_no_improvement_runs_every_epoch(data, tmp_path, monkeypatch):
    scripted(monkeypatch, [0.5] + [0.1] * 4)
    r = train(tiny_train_cfg(data, tmp_path, epochs=5, val_interval=1, pipeline="light"))
    assert not r.stopped_early and len(epochs_logged(r.save_dir)) == 5 and r.best_epoch == 1


def test_patience_is_checked(data, tmp_path):
    with pytest.raises(ValueError, match="patience=-1"):
        train(tiny_train_cfg(data, tmp_path, patience=-1))


@pytest.mark.slow
def test_every_ddp_rank_stops_with_rank_0(data, tmp_path):
    """Only rank 0 validates; the others must leave the loop at the same epoch (a rank left
    behind would wait for its peers forever)."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from helpers import tiny_train_cfg
        from rtmdet.train import train
        from rtmdet.train.trainer import Trainer
        aps = iter([0.3, 0.2, 0.2, 0.9, 0.9])
        Trainer.validate = lambda self: {{"AP": next(aps), "AP50": 0.0, "AP75": 0.0}}
        r = train(tiny_train_cfg({str(data)!r}, {str(tmp_path / 'runs')!r}, epochs=5, val_interval=1,
                                 patience=2, pipeline="light", batch=1))
        import os, pathlib  # one file per rank: their stdout lines can interleave
        pathlib.Path({str(tmp_path)!r}, "rank" + os.environ["RANK"]).write_text(
            f"{{r.stopped_early}} {{r.best_epoch}}")
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert (tmp_path / "rank0").read_text() == "True 1"
    assert (tmp_path / "rank1").read_text() == "True 0"  # stopped, with no best epoch of its own
    assert [e for e, _ in epochs_logged(tmp_path / "runs" / "exp")] == [1, 2, 3]
