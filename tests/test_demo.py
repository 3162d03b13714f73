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
