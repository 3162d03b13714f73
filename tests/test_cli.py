"""The `rtmdet` command as a user meets it: exit codes, outputs, bad inputs."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from rtmdet.cli import main
from helpers import DET_FIX, load_fixture, need


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for case in ("square", "portrait"):
        cv2.imwrite(str(d / f"{case}.jpg"), load_fixture(DET_FIX / f"predict_{case}.pth")["image_bgr"].numpy())
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return d


def test_predict_folder_skips_corrupt_and_writes_outputs(images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(images), "--weights", str(need(DET_FIX / "weights.pth")),
               "--score-thr", "0.02", "--save-dir", str(out), "--save-json", "--save-txt"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "corrupt.jpg" in printed.out + printed.err
    assert sorted(p.name for p in out.glob("*.jpg")) == ["portrait.jpg", "square.jpg"]
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["source"].rsplit("/", 1)[-1] for p in preds] == ["portrait.jpg", "square.jpg"]
    assert all(d["score"] > 0.02 for p in preds for d in p["detections"])
    lines = (out / "labels" / "square.txt").read_text().splitlines()
    assert len(lines) == len(preds[1]["detections"]) > 0
    drawn = cv2.imread(str(out / "square.jpg"))
    assert drawn.shape == (640, 640, 3)


def test_predict_video(tmp_path):
    video = tmp_path / "clip.avi"
    frame = load_fixture(DET_FIX / "predict_portrait.pth")["image_bgr"].numpy()
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        w.write(frame)
    w.release()
    out = tmp_path / "out"
    rc = main(["predict", str(video), "--weights", str(DET_FIX / "weights.pth"),
               "--score-thr", "0.02", "--save-dir", str(out), "--save-json"])
    assert rc == 0
    assert len(json.loads((out / "predictions.json").read_text())) == 3
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


@pytest.mark.parametrize("argv,msg", [
    (["--weights", "/nonexistent/w.pth"], "weights file not found"),
    (["--weights", str(DET_FIX / "weights.pth"), "--device", "gpu7"], "unknown device"),
    (["--model", "rtmdet-huge"], "unknown model"),
    ([], "give --model"),
])
def test_bad_model_args_exit_2_with_one_line(images, argv, msg, capsys):
    rc = main(["predict", str(images)] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and len(err.splitlines()) == 1


def test_checkpoint_of_another_model_exits_2(images, tmp_path, capsys):
    import torch
    bad = tmp_path / "other.pth"
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, bad)
    assert main(["predict", str(images), "--weights", str(bad)]) == 2
    assert "not an RTMDet checkpoint" in capsys.readouterr().err


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("rtmdet-tiny", "rtmdet-s", "rtmdet-m", "rtmdet-l", "rtmdet-x"):
        assert name in out
    assert "download.openmmlab.com" in out and "41.1" in out


def test_version_and_env(tmp_path, monkeypatch, capsys):
    import torch

    import rtmdet
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rtmdet {rtmdet.__version__}"
    (tmp_path / "w.pth").write_bytes(b"x" * 2**20)
    monkeypatch.setenv("RTMDET_HOME", str(tmp_path))
    assert main(["env"]) == 0
    import re
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert rows["torch"].startswith(torch.__version__)
    assert rows["rtmdet"].startswith(rtmdet.__version__)
    assert rows["weights cache"].startswith(f"{tmp_path} (RTMDET_HOME): 1 file(s), 1.0 MiB")
    want = "devices" if not torch.cuda.is_available() else "cuda:0"
    assert want in rows


@pytest.mark.parametrize("sig, code, said", [("SIGTERM", 143, "terminated (SIGTERM)"),
                                              ("SIGINT", 130, "interrupted")])
def test_a_signal_ends_any_command_with_the_shells_code(monkeypatch, capsys, sig, code, said):
    """kill / docker stop (SIGTERM) ends a command the way Ctrl-C does (its atomic outputs
    leave no temporary behind), with 143 instead of 130; SIGTERM's default is restored."""
    import os
    import signal
    import rtmdet.cli.models as models_cli

    def cmd(args):
        os.kill(os.getpid(), getattr(signal, sig))
        for _ in range(10**6):  # the handler raises between two bytecodes
            pass
        return 0
    monkeypatch.setattr(models_cli, "cmd_models", cmd)
    assert main(["models"]) == code
    assert capsys.readouterr().err.strip() == said
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_training_stopped_inside_another_command_keeps_its_exit_code(monkeypatch, capsys):
    """`rtmdet demo` trains: a SIGTERM there ends as TrainingInterrupted, which says 143."""
    import rtmdet.cli.models as models_cli
    from rtmdet.train.interrupt import TrainingInterrupted

    def cmd(args):
        raise TrainingInterrupted("stopped by SIGTERM; runs/x/last.pth holds the run", None, 143)
    monkeypatch.setattr(models_cli, "cmd_models", cmd)
    assert main(["models"]) == 143
    assert capsys.readouterr().err.strip() == "stopped by SIGTERM; runs/x/last.pth holds the run"


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "rtmdet", "models"], capture_output=True, text=True)
    assert r.returncode == 0 and "rtmdet-tiny" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rtmdet", "predict", "x.jpg", "--model", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown model" in r.stderr


def test_val_on_synthetic_dataset(tmp_path, capsys):
    import rtmdet
    from rtmdet.api import checkpoint_meta
    from rtmdet.checkpoint import atomic_save
    from rtmdet.data.synthetic import make_shapes_dataset
    make_shapes_dataset(tmp_path / "ds", num_images=4, image_size=160, split="val", seed=1)
    m = rtmdet.create("rtmdet-tiny", num_classes=3, class_names=["rectangle", "ellipse", "triangle"])
    atomic_save({"meta": checkpoint_meta(m), "state_dict": m.state_dict()}, tmp_path / "m.pth")
    rc = main(["val", "--data", str(tmp_path / "ds"), "--weights", str(tmp_path / "m.pth"),
               "--score-thr", "0.05", "--save-json", "--plots", "--save-dir", str(tmp_path / "val")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "rectangle" in out
    assert (tmp_path / "val" / "detections.json").exists() and (tmp_path / "val" / "pr_curves.png").exists()
    # an 80-class model on a 3-class dataset is refused with a clear message
    m80 = rtmdet.create("rtmdet-tiny")
    atomic_save({"meta": checkpoint_meta(m80), "state_dict": m80.state_dict()}, tmp_path / "m80.pth")
    assert main(["val", "--data", str(tmp_path / "ds"), "--weights", str(tmp_path / "m80.pth")]) == 2
    assert "80 classes" in capsys.readouterr().err


def test_val_yolo_format_gives_the_same_numbers_as_coco(tmp_path, capsys):
    """The same images and boxes as COCO json and as YOLO txt: `rtmdet val` must agree."""
    import rtmdet
    from rtmdet.api import checkpoint_meta
    from rtmdet.checkpoint import atomic_save
    from rtmdet.data.datasets import load_coco
    from rtmdet.data.synthetic import make_shapes_dataset
    ann = make_shapes_dataset(tmp_path / "ds", num_images=4, image_size=160, split="val", seed=3)
    coco = load_coco(ann, tmp_path / "ds" / "images" / "val")
    yolo = tmp_path / "yolo"
    (yolo / "images" / "val").mkdir(parents=True)
    (yolo / "labels" / "val").mkdir(parents=True)
    for r in coco.records:
        img = cv2.imread(r.path)
        name = r.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        cv2.imwrite(str(yolo / "images" / "val" / f"{name}.png"), img)  # lossless copy
        lines = []
        for (x1, y1, x2, y2), lab in zip(r.boxes.tolist(), r.labels.tolist()):
            cx, cy, w, h = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height, (x2 - x1) / r.width, (y2 - y1) / r.height
            lines.append(f"{lab} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}")
        (yolo / "labels" / "val" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (yolo / "data.yaml").write_text(f"path: {yolo}\nval: images/val\nnames: {coco.class_names}\n")
    from rtmdet.data.datasets import load_dataset
    from rtmdet.eval.coco import evaluate_coco
    yolo_ds = load_dataset(yolo / "data.yaml")

    def jittered(ds):  # the same detections for the same file in both forms
        out = []
        for r in ds.records:
            stem = r.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            rng = np.random.default_rng(int(stem.split("_")[-1]) if stem.split("_")[-1].isdigit() else 0)
            order = np.lexsort(r.boxes.T[::-1])  # same order whatever the file listed first
            boxes = r.boxes[order] + rng.normal(0, 3, r.boxes.shape)
            out.append({"image_id": r.image_id, "boxes": boxes, "labels": r.labels[order],
                        "scores": rng.uniform(0.1, 1, len(boxes))})
        return out

    a = evaluate_coco(coco, jittered(coco))
    b = evaluate_coco(yolo_ds, jittered(yolo_ds))
    assert 0.2 < a["AP"] < 1.0, "jittered boxes should score neither zero nor perfect"
    # (APs/APm/APl may differ: COCO's `area` is the polygon's, YOLO has only the box's)
    for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert a[k] == pytest.approx(b[k], abs=1e-6), k
    m = rtmdet.create("rtmdet-tiny", num_classes=3, class_names=coco.class_names)
    atomic_save({"meta": checkpoint_meta(m), "state_dict": m.state_dict()}, tmp_path / "m.pth")
    assert main(["val", "--data", str(yolo / "data.yaml"), "--weights", str(tmp_path / "m.pth"),
                 "--score-thr", "0.02"]) == 0
    assert "ellipse" in capsys.readouterr().out
