"""The issue's table walked as a matrix over the CLI verbs: every bad number, path, file or
setting is exit code 2 and one line on stderr (`rtmdet VERB: error: ...`), never a traceback.

Numeric flags are found by walking the parser: each verb's flags are read from
`rtmdet.cli.build_parser()` and every validated type has its bad values below, so a new verb or
flag is covered without touching this file (a flag with a bare int/float type fails the walk)."""
from __future__ import annotations

import argparse
import dataclasses

import cv2
import numpy as np
import pytest
import torch

import rtmdet
from rtmdet.api import checkpoint_meta
from rtmdet.checkpoint import atomic_save
from rtmdet.cli import build_parser, common, main

BAD_VALUES = {
    common.positive_int: ["0", "-1", "abc", "1.5"],
    common.non_negative_int: ["-1", "x"],
    common.unit_float: ["-0.1", "1.5", "nan", "abc"],
    common.image_size: ["0", "33", "100", "-32"],
    common.opset_version: ["10", "99"],
    common.positive_float: ["0", "-1", "inf", "nan", "abc"],
    common.tile_size: ["0", "31", "abc"],
}

# a plausible command line for each verb (the bad flag is added to it)
BASE = {
    "predict": ["predict", "img.jpg", "--weights", "W"],
    "val": ["val", "--data", "D", "--weights", "W"],
    "train": ["train", "--data", "D"],
    "export": ["export", "--weights", "W"],
    "bench": ["bench", "--weights", "W"],
    "demo": ["demo", "--out", "OUT"],
    "models": ["models"],
    "split": ["split", "SRC", "--out", "OUT"],
    "env": ["env"],
}


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def numeric_cases():
    for verb, p in verb_parsers().items():
        for a in p._actions:
            if a.type in BAD_VALUES and a.option_strings:
                for v in BAD_VALUES[a.type]:
                    yield pytest.param(verb, a.option_strings[-1], v, id=f"{verb}{a.option_strings[-1]}={v}")


def test_every_verb_and_typed_flag_is_walked():
    parsers = verb_parsers()
    assert set(parsers) <= set(BASE), f"add a base command line for {set(parsers) - set(BASE)}"
    for verb, p in parsers.items():
        for a in p._actions:
            assert a.type not in (int, float), f"rtmdet {verb} {a.option_strings}: use a validated type"
            assert a.type is None or a.type in BAD_VALUES, f"rtmdet {verb} {a.option_strings}: add bad values"
    assert len(list(numeric_cases())) > 40


def one_line_exit_2(capsys, argv, *says):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, (argv, rc, err)
    assert len(err) == 1 and err[0].startswith(f"rtmdet {argv[0]}: error: "), (argv, err)
    assert "Traceback" not in err[0]
    for s in says:
        assert str(s) in err[0], (argv, s, err)
    return err[0]


@pytest.mark.parametrize("verb,flag,value", list(numeric_cases()))
def test_bad_numbers(verb, flag, value, capsys):
    one_line_exit_2(capsys, BASE[verb] + [flag, value], flag)


# ------------------------------------------------------------------------ files and settings
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 3-class checkpoint, its dataset, an image, and files that are not what they claim."""
    from rtmdet.data.synthetic import make_shapes_splits
    d = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    m = rtmdet.create("rtmdet-tiny", num_classes=3, class_names=["rectangle", "ellipse", "triangle"])
    m.test_cfg.imgsz = 64
    atomic_save({"meta": checkpoint_meta(m), "state_dict": m.state_dict()}, d / "w.pth")
    atomic_save({"state_dict": m.state_dict(), "meta": checkpoint_meta(m), "epoch": 1}, d / "best.pth")
    make_shapes_splits(d / "ds", {"train": 2, "val": 1}, image_size=(64, 64))
    cv2.imwrite(str(d / "img.png"), np.zeros((48, 64, 3), np.uint8))
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(999))
    (d / "file").write_text("a file, not a folder")
    import json
    good = json.loads((d / "ds" / "annotations" / "instances_val.json").read_text())
    for name, change in BROKEN_COCO.items():
        doc = json.loads(json.dumps(good))
        change(doc)
        (d / "coco" / name / "annotations").mkdir(parents=True)
        (d / "coco" / name / "images").symlink_to(d / "ds" / "images")
        for split in ("train", "val"):
            (d / "coco" / name / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return d


def _set(path, value):
    def change(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return change


# COCO json files a tool wrote wrongly -> what the one line says
BROKEN_COCO = {
    "images_object": _set(["images"], {"id": 1}),
    "image_id_list": _set(["images", 0, "id"], [1]),
    "ann_image_id_list": _set(["annotations", 0, "image_id"], [1]),
    "category_id_str": _set(["annotations", 0, "category_id"], "1"),
    "categories_object": _set(["categories"], {"1": "rectangle"}),
    "width_text": _set(["images", 0, "width"], "wide"),
    "image_not_object": _set(["images", 0], 7),
}
BROKEN_SAYS = {
    "images_object": "'images' must be a list of objects, got an object",
    "image_id_list": "'images'[0] id must be an integer or a string, got a list [1]",
    "ann_image_id_list": "'annotations'[0] image_id must be an integer or a string, got a list",
    "category_id_str": "'annotations'[0] category_id must be an integer, got a string",
    "categories_object": "'categories' must be a list of objects",
    "width_text": "'images'[0] width must be a positive number",
    "image_not_object": "'images'[0] must be an object, got int",
}


def _cases(d):
    W, D, IMG, under_file = d / "w.pth", d / "ds", d / "img.png", d / "file" / "sub"
    return [
        # weights / model
        (["predict", IMG, "--weights", d / "missing.pth"], ["weights file not found"]),
        (["val", "--data", D, "--weights", d / "random.pth"], ["not a PyTorch checkpoint"]),
        (["export", "--weights", d], ["weights file not found"]),
        (["bench", "--model", "rtmdet-huge"], ["unknown model"]),
        (["predict", IMG], ["give --model NAME or --weights PATH"]),
        (["predict", IMG, "--weights", W, "--device", "gpu7"], ["unknown device"]),
        (["demo", "--out", d / "demo", "--device", "gpu7"], ["unknown device"]),
        (["train", "--data", D, "--weights", d / "random.pth", "--project", d / "runs"], ["not a PyTorch checkpoint"]),
        # outputs that cannot be written
        (["predict", IMG, "--weights", W, "--save-dir", under_file], [d / "file", "not a folder"]),
        (["val", "--data", D, "--weights", W, "--save-json", "--save-dir", under_file], ["not a folder"]),
        (["export", "--weights", W, "--output", under_file / "m.onnx"], ["not a folder"]),
        (["train", "--data", D, "--project", under_file], [d / "file", "not a folder"]),
        # data
        (["val", "--data", d / "nope", "--weights", W], ["nope"]),
        (["train", "--data", d / "nope", "--project", d / "runs"], ["nope"]),
        (["predict", d / "nope.jpg", "--weights", W], ["no images or videos found"]),
        # settings
        (["train", "--data", D, "--project", d / "runs", "lr=abc"], ["lr='abc': must be a number"]),
        (["train", "--data", D, "--project", d / "runs", "imgsz=100"], ["imgsz=100"]),
        (["train", "--data", D, "--project", d / "runs", "nope=1"], ["unknown config key"]),
        (["train", "--resume", d / "best.pth"], ["no training state", "last.pth"]),
        (["train", "--resume", d / "missing" / "last.pth"], ["resume checkpoint not found"]),
        (["train"], ["give --data"]),
        (["export", "--weights", W, "--format", "engine"], ["engine"]),
        (["predict", IMG, "--weights", W, "--tile", "64", "--overlap", "64"], ["--overlap 64"]),
        (["split", d / "nope", "--out", d / "patches"], ["nope"]),
        (["split", D, "--out", under_file], ["file"]),
    ]


def test_bad_files_and_settings(world, capsys):
    for argv, says in _cases(world):
        one_line_exit_2(capsys, argv, *says)


@pytest.mark.parametrize("name", list(BROKEN_COCO))
def test_coco_json_of_the_wrong_shape(world, name, capsys):
    data = world / "coco" / name
    one_line_exit_2(capsys, ["val", "--data", data, "--weights", world / "w.pth"], BROKEN_SAYS[name])
    one_line_exit_2(capsys, ["train", "--data", data, "--project", world / "runs"], BROKEN_SAYS[name])
    assert not (world / "runs").exists()  # no run folder for a run that never started


def test_weights_by_name_offline_is_one_line(world, tmp_path, monkeypatch, capsys):
    """--weights rtmdet-tiny without a network: the download error, not a traceback."""
    import socket

    from rtmdet import presets
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused, as offline
    real = presets.get_record
    monkeypatch.setattr(presets, "get_record", lambda name: dataclasses.replace(
        real(name), url=f"http://127.0.0.1:{port}/rtmdet_tiny_x-0123abcd.pth"))
    monkeypatch.setenv("RTMDET_HOME", str(tmp_path / "cache"))
    one_line_exit_2(capsys, ["train", "--data", world / "ds", "--weights", "rtmdet-tiny",
                             "--project", tmp_path / "runs"], "download", "refused")
    one_line_exit_2(capsys, ["predict", world / "img.png", "--model", "rtmdet-tiny"], "download")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_asked_for_on_a_machine_without_it(tmp_path, capsys):
    """Before any work: the demo used to write its dataset, then fail in the trainer."""
    for argv in (["demo", "--out", tmp_path / "demo"], ["train", "--data", tmp_path / "d"]):
        one_line_exit_2(capsys, argv + ["--device", "cuda"], "--device cuda: CUDA is not available")
    assert not (tmp_path / "demo").exists()
