"""ImageNet-pretrained backbones: served by a local HTTP server in mmpretrain's classifier layout,
loaded strictly before the first training step, refused when a key is missing or misshapen,
a one-line `rtmdet train` error offline, and no download when training from scratch."""
from __future__ import annotations

import dataclasses
import socket

import pytest
import torch
from helpers import FileHandler, file_server

import rtmdet
from rtmdet import presets, zoo
from rtmdet.checkpoint import atomic_save
from rtmdet.pretrained import (BackboneReport, backbone_url, load_pretrained_backbone,
                               offline_message)
from rtmdet.train.config import TrainConfig
from rtmdet.train.trainer import Trainer, pretrained_backbone_source

TINY = "cspnext-tiny_imagenet_600e.pth"
S = "cspnext-s_imagenet_600e.pth"


def classifier_state(size: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the real key names and shapes of our `size` backbone, in the
    classifier layout: `backbone.*` + a linear head + a preprocessor entry."""
    g = torch.Generator().manual_seed(seed)
    own = rtmdet.create(f"rtmdet-{size}").backbone.state_dict()
    sd = {}
    for k, v in own.items():
        if not v.is_floating_point():
            sd[f"backbone.{k}"] = torch.full_like(v, 7)
        elif k.endswith("running_var"):
            sd[f"backbone.{k}"] = torch.rand(v.shape, generator=g) + 0.5
        else:
            sd[f"backbone.{k}"] = torch.randn(v.shape, generator=g)
    last = own[[k for k in own if k.endswith("conv.weight")][-1]].shape[0]
    sd["head.fc.weight"] = torch.randn(1000, last, generator=g)
    sd["head.fc.bias"] = torch.zeros(1000)
    sd["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53])
    return sd


def save(sd: dict, path) -> bytes:
    atomic_save({"meta": {"epoch": 600}, "state_dict": sd}, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_sd():
    return classifier_state("tiny")


@pytest.fixture()
def server():
    with file_server() as url:
        yield url


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RTMDET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from rtmdet.data.synthetic import make_shapes_splits
    root = tmp_path_factory.mktemp("shapes_pre")
    make_shapes_splits(root, {"train": 2, "val": 1}, image_size=(64, 64), scale_range=(0.3, 0.6))
    return root


def point_recipe_at(monkeypatch, url: str, name: str = "rtmdet-tiny") -> None:
    rec = presets.RECORDS[name]
    monkeypatch.setitem(presets.RECORDS, name, dataclasses.replace(rec, pretrained_backbone=url))


def cfg_for(data, tmp_path, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), model="rtmdet-tiny", epochs=1, batch=2, imgsz=64, workers=0,
                       device="cpu", warmup_iters=1, stage2_epochs=1, pipeline="light", val_interval=5,
                       project=str(tmp_path), name="run", plots=False, **kw)


def assert_backbone_equals(module, sd) -> None:
    for k, v in module.backbone.state_dict().items():
        assert torch.equal(v, sd[f"backbone.{k}"]), k


def test_recipe_default_downloads_the_backbone_and_training_starts_from_it(
        server, home, shapes, tmp_path, tiny_sd, monkeypatch):
    FileHandler.files[TINY] = save(tiny_sd, tmp_path / "src.pth")
    point_recipe_at(monkeypatch, f"{server}/cspnext_rsb_pretrain/{TINY}")
    t = Trainer(cfg_for(shapes, tmp_path))  # pretrained_backbone=None: the recipe's
    assert (home / TINY).read_bytes() == FileHandler.files[TINY]  # cached in RTMDET_HOME
    assert_backbone_equals(t.model, tiny_sd)
    assert_backbone_equals(t.ema.module, tiny_sd)  # the EMA starts from the same weights
    rep = t.backbone_report
    assert rep.loaded == len(t.model.backbone.state_dict()) and rep.absent_counters == 0
    assert sorted(rep.skipped) == ["data_preprocessor.mean", "head.fc.bias", "head.fc.weight"]
    assert "skipped 3 non-backbone" in str(rep) and len(str(rep).splitlines()) == 1
    seen = []
    t.callbacks.append(lambda tr: seen.append(tr.iteration))
    t.train()
    assert seen == [1]
    assert not torch.equal(t.model.backbone.stem[0].conv.weight, tiny_sd["backbone.stem.0.conv.weight"])

    # resume and fine-tuning keep their own weights: nothing is fetched (the file is gone)
    FileHandler.files.clear()
    (home / TINY).unlink()
    n = len(FileHandler.log)
    Trainer(dataclasses.replace(cfg_for(shapes, tmp_path), resume=str(t.save_dir / "last.pth")))
    Trainer(cfg_for(shapes, tmp_path, weights=str(t.save_dir / "last.pth")))
    assert len(FileHandler.log) == n and not (home / TINY).exists()


def test_s_backbone_from_url_and_bare_keys_from_a_path(server, home, tmp_path):
    sd = classifier_state("s", seed=1)
    FileHandler.files[S] = save(sd, tmp_path / "s.pth")
    model = rtmdet.create("rtmdet-s", num_classes=3)
    rep = load_pretrained_backbone(model, f"{server}/{S}", progress=False)
    assert_backbone_equals(model, sd)
    assert isinstance(rep, BackboneReport) and rep.loaded == len(model.backbone.state_dict())
    assert (home / S).is_file()
    # a file without the `backbone.` prefix (a bare CSPNeXt state_dict) loads the same
    bare = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    model2 = rtmdet.create("rtmdet-ins-s", num_classes=3)
    atomic_save(bare, tmp_path / "bare.pth")
    rep = load_pretrained_backbone(model2, tmp_path / "bare.pth")
    assert_backbone_equals(model2, sd) and rep.skipped == []
    # a detector checkpoint has a backbone too: its neck and head are skipped
    det = rtmdet.create("rtmdet-s", num_classes=3)
    atomic_save({"state_dict": model.state_dict()}, tmp_path / "det.pth")
    rep = load_pretrained_backbone(det, tmp_path / "det.pth")
    assert_backbone_equals(det, sd)
    assert rep.skipped and all(k.startswith(("neck.", "bbox_head.")) for k in rep.skipped)


def test_missing_and_misshapen_keys_are_refused_by_name(tmp_path, tiny_sd):
    model = rtmdet.create("rtmdet-tiny")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    sd = dict(tiny_sd)
    del sd["backbone.stage3.1.main_conv.conv.weight"]
    sd["backbone.stem.1.bn.weight"] = torch.zeros(5)
    atomic_save({"state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as e:
        load_pretrained_backbone(model, tmp_path / "bad.pth")
    msg = str(e.value)
    assert "1 missing: backbone.stage3.1.main_conv.conv.weight" in msg
    assert "backbone.stem.1.bn.weight (5,) vs (12,)" in msg and len(msg.splitlines()) == 1
    for k, v in model.backbone.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k
    # another size's backbone: shapes named
    with pytest.raises(ValueError, match=r"of another shape.*backbone\.stem\.0\.conv\.weight"):
        load_pretrained_backbone(rtmdet.create("rtmdet-s"), tmp_path / "bad.pth")


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cspnext_rsb_pretrain/{TINY}"


@pytest.mark.parametrize("how", ["404", "closed_port"])
def test_offline_is_a_one_line_cli_error(how, server, home, shapes, tmp_path, monkeypatch, capsys):
    from rtmdet.cli import main
    url = f"{server}/cspnext_rsb_pretrain/{TINY}" if how == "404" else _closed_port_url()
    point_recipe_at(monkeypatch, url)
    rc = main(["train", "--data", str(shapes), "--model", "rtmdet-tiny", "--epochs", "1", "--imgsz", "64",
               "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--name", "off"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert TINY in err and "pretrained_backbone=false" in err and "pretrained_backbone=PATH" in err
    assert str(home / TINY) in err
    assert ("404" in err) if how == "404" else ("refused" in err.lower() or "urlopen" in err)
    assert not (tmp_path / "off").exists()


def test_from_scratch_does_not_download(server, home, shapes, tmp_path, tiny_sd, monkeypatch):
    FileHandler.files[TINY] = save(tiny_sd, tmp_path / "src.pth")
    point_recipe_at(monkeypatch, f"{server}/{TINY}")

    def no_download(*a, **k):
        raise AssertionError("pretrained_backbone=false must not download")
    monkeypatch.setattr(zoo, "download", no_download)
    t = Trainer(cfg_for(shapes, tmp_path, pretrained_backbone=False))
    assert t.backbone_report is None and FileHandler.log == []
    assert not torch.equal(t.model.backbone.stem[0].conv.weight, tiny_sd["backbone.stem.0.conv.weight"])


def test_explicit_path_wins_and_values_parse(home, shapes, tmp_path, tiny_sd):
    save(tiny_sd, tmp_path / "mine.pth")
    t = Trainer(cfg_for(shapes, tmp_path, pretrained_backbone=str(tmp_path / "mine.pth")))
    assert_backbone_equals(t.model, tiny_sd)
    rec, m = presets.RECORDS["rtmdet-tiny"], presets.RECORDS["rtmdet-m"]
    src = lambda v, r=rec: pretrained_backbone_source(TrainConfig(pretrained_backbone=v), r)  # noqa: E731
    assert src(None) == src(True) == src("true") == presets.BACKBONES["tiny"]
    assert src(False) is None and src("false") is None and src(None, m) is None  # m: from scratch
    assert src("/x/y.pth") == "/x/y.pth"


def test_zoo_style_names_and_records():
    assert backbone_url("cspnext-tiny") == backbone_url("rtmdet-tiny") == presets.BACKBONES["tiny"]
    assert backbone_url("CSPNeXt-s_imagenet_600e") == backbone_url("rtmdet-ins-s") == presets.BACKBONES["s"]
    assert backbone_url("rtmdet-l") is None
    for r in presets.RECORDS.values():  # tiny and s start from ImageNet, m/l/x from scratch
        if r.family != "rotated":  # RTMDet-R: every size from ImageNet (m/l: RSB-A1), l-coco from rtmdet-l
            assert (r.pretrained_backbone is not None) == (r.size in ("tiny", "s"))
        else:
            assert r.pretrained_backbone is not None
    msg = offline_message(presets.BACKBONES["s"], "download failed: x")
    assert S in msg and "pretrained_backbone=false" in msg and len(msg.splitlines()) == 1
