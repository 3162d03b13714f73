"""The benchmark scripts still run against the package (tiny settings; figures not checked)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("model", ["rtmdet-tiny", "rtmdet-ins-tiny"])
def test_bench_loader_runs(model):
    out = _run("benchmarks/bench_loader.py", "--model", model, "--size", "320", "--images", "6",
               "--samples", "6", "--workers", "1", "--batch", "2", "--batches", "1", "--runs", "1")
    for stage in (1, 2):
        assert f"{model} stage {stage} pipeline at 320" in out
    assert out.count("colour jitter on") == 2 and "resize + crop on" in out
    assert "1 thread/worker" in out
    assert ("on the loss grid" in out) == ("ins" in model)


def test_bench_train_runs():
    out = _run("benchmarks/bench_train.py", "--models", "rtmdet-tiny", "--sizes", "128", "--batch", "2",
               "--iters", "1", "--warmup", "0", "--workers", "0", "--loader-images", "4",
               "--loader-batches", "1", "--skip-assigner")
    assert "rtmdet-tiny  |   128 | fp32 (baseline)" in out and "loader stage 1" in out
