"""Loading checkpoints never runs pickled code; wrong checkpoints are named precisely."""
import os

import pytest
import torch

import rtmdet
from rtmdet.api import checkpoint_meta
from rtmdet.checkpoint import CheckpointError, atomic_save, safe_load

MARKER = {"path": None}


def _touch(path):
    open(path, "w").write("pwned")
    return 0


class Evil:
    """Unpickling this with plain pickle would create a file."""

    def __reduce__(self):
        return (_touch, (MARKER["path"],))


class HistoryBufferLike:
    def __init__(self):
        self.data = [1.0, 2.0]


def test_extra_pickled_objects_are_not_executed(tmp_path):
    MARKER["path"] = str(tmp_path / "marker")
    model = rtmdet.create("rtmdet-tiny")
    path = tmp_path / "official_like.pth"
    torch.save({"meta": {"note": HistoryBufferLike()}, "state_dict": model.state_dict(),
                "message_hub": {"buf": Evil()}, "optimizer": {"state": {}}}, path)
    loaded = rtmdet.load(path)
    assert not os.path.exists(MARKER["path"]), "checkpoint code was executed"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    ck = safe_load(path)
    assert type(ck["message_hub"]["buf"]).__name__ == "_touch"  # an inert stand-in


def test_checkpoint_for_another_model_names_the_keys(tmp_path):
    small = rtmdet.create("rtmdet-tiny", num_classes=5)
    path = tmp_path / "five.pth"
    atomic_save({"state_dict": small.state_dict()}, path)
    target = rtmdet.create("rtmdet-tiny")  # 80 classes
    with pytest.raises(CheckpointError, match=r"bbox_head\.rtm_cls\.0\.weight: checkpoint \(5, 96, 1, 1\) vs model \(80, 96, 1, 1\)"):
        rtmdet.load(path, model=target)
    with pytest.raises(CheckpointError, match="missing"):
        partial = {k: v for k, v in small.state_dict().items() if not k.startswith("neck.")}
        atomic_save({"state_dict": partial}, path)
        rtmdet.load(path, model=rtmdet.create("rtmdet-tiny", num_classes=5))


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="bad.pth"):
        rtmdet.load(bad)
    with pytest.raises(FileNotFoundError):
        rtmdet.load(tmp_path / "nope.pth")
    atomic_save({"state_dict": {"foo.weight": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match="not an RTMDet checkpoint"):
        rtmdet.load(bad)


def test_our_meta_restores_classes_and_test_cfg(tmp_path):
    model = rtmdet.create("rtmdet-s", num_classes=3, class_names=["a", "b", "c"])
    model.test_cfg.score_thr = 0.25
    path = tmp_path / "ours.pth"
    atomic_save({"meta": checkpoint_meta(model), "state_dict": model.state_dict()}, path)
    loaded = rtmdet.load(path)
    assert loaded.class_names == ["a", "b", "c"] and loaded.test_cfg.score_thr == 0.25
    assert loaded.cfg == model.cfg


def test_module_prefix_is_stripped(tmp_path):
    model = rtmdet.create("rtmdet-tiny")
    path = tmp_path / "ddp.pth"
    atomic_save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    rtmdet.load(path)


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "ck.pth"
    atomic_save({"a": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"a": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]
