"""`rtmdet demo`: generate -> train -> evaluate -> draw, offline (shortened here)."""
from rtmdet.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as the README runs it
    out = tmp_path / "demo"
    assert main(["demo", "--out", "demo", "--epochs", "1", "--images", "8", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and "rectangle" in printed
    assert (out / "train" / "best.pth").is_file() and (out / "train" / "results.csv").is_file()
    assert len(list((out / "predict").glob("*.jpg"))) == 8
    assert (out / "data" / "annotations" / "instances_val.json").is_file()


def test_rotated_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "rdemo"
    assert main(["demo", "--task", "rotated", "--out", str(out), "--epochs", "1", "--images", "8",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "DOTA mAP50" in printed and "ellipse" in printed
    assert (out / "train" / "best.pth").is_file() and (out / "train" / "results.csv").is_file()
    assert "mAP50" in (out / "train" / "results.csv").read_text().splitlines()[0]
    assert len(list((out / "predict").glob("*.png"))) == 8
    assert (out / "data" / "val" / "annfiles").is_dir() and (out / "data" / "classes.txt").is_file()
