"""Host values reach the device without a hidden wait (`rtmdet.ops.upload`)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from rtmdet.ops.upload import rows_index, upload

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
ROOT = Path(__file__).resolve().parents[1] / "rtmdet"


def test_upload_gives_the_values_with_the_dtype():
    assert torch.equal(upload([3, 1, 2]), torch.tensor([3, 1, 2]))
    flags = upload([True, False], torch.bool, "cpu")
    assert flags.dtype == torch.bool and flags.tolist() == [True, False]
    cast = upload(torch.tensor([1, 2], dtype=torch.int32), device=torch.device("cpu"))
    assert cast.dtype == torch.long and cast.tolist() == [1, 2]
    assert upload([], device="cpu").shape == (0,)
    assert upload([0.5, 2.0], None).dtype == torch.float32
    kept = torch.tensor([1, 2], dtype=torch.int32)
    assert upload(kept, None).dtype == torch.int32


@pytest.mark.parametrize("rows,want", [([0, 1, 2], slice(0, 3)), ([4], slice(4, 5)),
                                       ([2, 3, 4, 5], slice(2, 6))])
def test_contiguous_rows_are_a_slice(rows, want):
    assert rows_index(rows, "cpu") == want


@pytest.mark.parametrize("rows", [[0, 2], [3, 1, 2], [1, 1]])
def test_other_rows_are_an_index_of_the_same_rows(rows):
    got = rows_index(rows, "cpu")
    x = torch.arange(10) * 10
    assert isinstance(got, torch.Tensor) and x[got].tolist() == [10 * r for r in rows]


# Where the post-processing and the device letterbox turn host values into device tensors,
# `torch.tensor(..., device=...)` would be a blocking copy: on CUDA a wait for every queued kernel.
HOT = ["ops/nms.py", "ops/postprocess.py", "ops/instance_masks.py", "ops/bilinear.py",
       "inference/classes.py", "data/letterbox.py"]
ALLOWED = {("ops/postprocess.py", "_inverse_scales")}  # made once per set of scale factors, cached


def _tensor_calls_with_device(path: Path):
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("tensor", "as_tensor") and \
                    any(k.arg == "device" for k in node.keywords):
                yield fn.name, node.lineno


@pytest.mark.parametrize("rel", HOT)
def test_hot_paths_make_no_blocking_uploads(rel):
    found = [(fn, line) for fn, line in _tensor_calls_with_device(ROOT / rel) if (rel, fn) not in ALLOWED]
    assert not found, f"{rel}: torch.tensor(..., device=...) in {found}; use rtmdet.ops.upload"


def test_the_scan_finds_a_blocking_upload(tmp_path):
    """The check above can fail: it sees the calls it forbids."""
    src = tmp_path / "m.py"
    src.write_text("import torch\ndef f(d):\n    return torch.tensor([1], device=d)\n")
    assert list(_tensor_calls_with_device(src)) == [("f", 3)]


@cuda
def test_cuda_upload_does_not_wait_for_queued_kernels():
    """With ~0.5 s of work queued, `upload` returns before it has run (the stream is still
    busy); `torch.tensor(..., device="cuda")` waits for it - the wait this avoids."""
    stream = torch.cuda.current_stream()
    torch.cuda.synchronize()
    torch.cuda._sleep(1_000_000_000)
    got = upload([5, 6, 7], device="cuda")
    assert not stream.query()
    torch.cuda.synchronize()
    assert got.tolist() == [5, 6, 7] and got.device.type == "cuda"
    idx = rows_index([0, 2], "cuda")
    torch.cuda._sleep(1_000_000_000)
    x = torch.arange(4, device="cuda")[idx]
    assert not stream.query()
    assert x.tolist() == [0, 2]
    torch.cuda._sleep(1_000_000_000)
    torch.tensor([1, 2], device="cuda")
    assert stream.query()


@cuda
def test_cuda_training_targets_do_not_wait_for_the_forward():
    """The loader's pinned targets reach the device while earlier work (the forward) still
    runs, so the host queues the loss meanwhile."""
    from rtmdet.families.base import targets_on
    stream = torch.cuda.current_stream()
    boxes = [torch.rand(5, 4).pin_memory(), torch.rand(0, 4).pin_memory()]
    torch.cuda.synchronize()
    torch.cuda._sleep(1_000_000_000)
    got = targets_on(boxes, torch.device("cuda"))
    assert not stream.query()
    assert all(torch.equal(g.cpu(), b) for g, b in zip(got, boxes))
