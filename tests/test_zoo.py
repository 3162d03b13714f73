"""Checkpoint download against a local HTTP server: served, truncated, resumed, wrong hash."""
import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from helpers import FileHandler as _Handler
from helpers import file_server

import rtmdet
from rtmdet import presets, zoo
from rtmdet.checkpoint import atomic_save


@pytest.fixture()
def server():
    with file_server() as url:
        yield url


def _checkpoint_bytes(tmp_path: Path) -> bytes:
    model = rtmdet.create("rtmdet-tiny", num_classes=4)
    p = tmp_path / "src.pth"
    atomic_save({"meta": {}, "state_dict": model.state_dict()}, p)
    return p.read_bytes()


def _serve(data: bytes, stamp="20990101_000000") -> str:
    name = f"rtmdet_tiny_test_{stamp}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    _Handler.files[name] = data
    return name


def test_download_verifies_and_caches(server, tmp_path, monkeypatch):
    data = _checkpoint_bytes(tmp_path)
    name = _serve(data)
    monkeypatch.setenv("RTMDET_HOME", str(tmp_path / "cache"))
    path = zoo.download(f"{server}/x/{name}", progress=False)
    assert path == tmp_path / "cache" / name and path.read_bytes() == data
    n_requests = len(_Handler.log)
    assert zoo.download(f"{server}/x/{name}", progress=False) == path
    assert len(_Handler.log) == n_requests, "a cached, verified file must not be fetched again"


def test_truncated_download_fails_then_resumes(server, tmp_path):
    data = _checkpoint_bytes(tmp_path)
    name = _serve(data)
    _Handler.truncate_once.add(name)
    with pytest.raises(zoo.DownloadError, match="incomplete|interrupted"):
        zoo.download(f"{server}/{name}", tmp_path / "c", progress=False)
    part = tmp_path / "c" / (name + ".part")
    assert 0 < part.stat().st_size < len(data)
    assert not (tmp_path / "c" / name).exists()
    path = zoo.download(f"{server}/{name}", tmp_path / "c", progress=False)
    assert path.read_bytes() == data and not part.exists()
    assert _Handler.log[-1][1] == f"bytes={len(data) // 2}-", "second call must resume with Range"


def test_wrong_hash_is_rejected_and_nothing_kept(server, tmp_path):
    data = _checkpoint_bytes(tmp_path)
    name = "rtmdet_tiny_bad_20990101-deadbeef.pth"
    _Handler.files[name] = data
    with pytest.raises(zoo.DownloadError, match="deadbeef"):
        zoo.download(f"{server}/{name}", tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_http_error_is_a_download_error(server, tmp_path):
    with pytest.raises(zoo.DownloadError, match="404"):
        zoo.download(f"{server}/missing-12345678.pth", tmp_path, progress=False)


def test_load_by_zoo_name_uses_the_cache(server, tmp_path, monkeypatch):
    data = _checkpoint_bytes(tmp_path)
    name = _serve(data)
    entry = presets.RECORDS["rtmdet-tiny"]
    monkeypatch.setitem(presets.RECORDS, "rtmdet-tiny", dataclasses.replace(entry, url=f"{server}/{name}"))
    monkeypatch.setenv("RTMDET_HOME", str(tmp_path / "home"))
    model = rtmdet.load("rtmdet-tiny", progress=False)
    assert model.cfg.num_classes == 4 and not model.training
    assert (tmp_path / "home" / name).exists()


def test_zoo_urls_carry_hash_prefixes():
    for e in presets.RECORDS.values():
        assert e.url.startswith("https://download.openmmlab.com/")
        assert zoo.hash_prefix(e.filename) is not None and len(zoo.hash_prefix(e.filename)) == 8


@pytest.mark.parametrize("name", ["rtmdet-tiny", "rtmdet-ins-tiny"])
def test_zoo_gmacs_agree_with_a_flop_count(name):
    from torch.utils.flop_counter import FlopCounterMode
    model = rtmdet.create(name).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, 640, 640))
    assert fc.get_total_flops() / 2e9 == pytest.approx(presets.RECORDS[name].gmacs, abs=0.01)


def test_tiny_s_m_gmacs_are_the_published_ones():
    # RTMDET_SPEC.md: tiny 8.04G, s 14.76G, m 39.07G multiply-accumulates at 640
    assert [presets.RECORDS[f"rtmdet-{s}"].gmacs for s in ("tiny", "s", "m")] == [8.04, 14.76, 39.07]


def test_model_names_normalise_one_way():
    assert presets.normalize_name(" RTMDet_Ins_S ") == "rtmdet-ins-s"
    assert presets.get_record("RTMDET_TINY").name == "rtmdet-tiny"
    with pytest.raises(KeyError, match="known: rtmdet-tiny"):
        presets.get_record("rtmdet-xxl")


def test_every_record_builds_its_family_and_loads_by_preset_name(tmp_path):
    for rec in presets.RECORDS.values():
        cfg = rec.model_config()
        assert cfg.family == rec.family and rec.test_config().imgsz == rec.imgsz
    model = rtmdet.create("rtmdet-tiny", num_classes=3)
    atomic_save({"state_dict": model.state_dict()}, tmp_path / "bare.pth")  # no rtmdet meta
    again = rtmdet.load(tmp_path / "bare.pth", model="rtmdet-tiny")
    assert again.cfg.num_classes == 3 and again.family.name == "detect"


def test_a_server_that_never_answers_fails_fast_and_the_attempt_is_shown(tmp_path, capsys):
    """A server that accepts the connection and then says nothing (a dead proxy, a firewall
    that swallows packets): an error within seconds, not a silent minute."""
    import socket
    import time
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)  # the kernel accepts; nobody ever reads or answers
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/m/rtmdet_x-0123abcd.pth"
    try:
        t0 = time.time()
        with pytest.raises(zoo.DownloadError, match=r"no answer within 5 s.*put the file at"):
            zoo.download(url, tmp_path / "cache")
        assert time.time() - t0 < 10
    finally:
        srv.close()
    out = capsys.readouterr().out
    assert f"downloading {url} -> {tmp_path / 'cache' / 'rtmdet_x-0123abcd.pth'}" in out
