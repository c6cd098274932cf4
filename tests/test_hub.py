"""Official-weights registry and verified downloads, against a local HTTP server."""

from __future__ import annotations

import functools
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import lightsr
from lightsr import hub
from lightsr.cli import main
from lightsr.errors import CheckpointError, DownloadError
from lightsr.io import read_image, write_image
from tests.conftest import shared_file

EMT_X2 = "EMT/EMT_LSR_x2.pth"


class _Mirror:
    """A threaded HTTP server on 127.0.0.1 that serves one folder and counts requests."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        handler = functools.partial(self._Handler, directory=str(directory), mirror=self)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    class _Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, mirror: _Mirror, **kwargs) -> None:
            self.mirror = mirror
            super().__init__(*args, **kwargs)

        def do_GET(self) -> None:
            self.mirror.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:  # keep test output clean
            pass


@pytest.fixture
def serve(monkeypatch, tmp_path) -> Iterator:
    """``serve(folder)`` starts a mirror of ``folder`` and points lightsr's cache and weights
    URL at a temporary folder and that mirror."""
    mirrors: list[_Mirror] = []
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path / "cache"))

    def start(directory: Path) -> _Mirror:
        mirror = _Mirror(directory)
        mirror.thread.start()
        mirrors.append(mirror)
        monkeypatch.setenv("LIGHTSR_WEIGHTS_URL", mirror.url)
        return mirror

    yield start
    for mirror in mirrors:
        mirror.server.shutdown()
        mirror.server.server_close()
        mirror.thread.join(timeout=5)


@pytest.fixture
def official_dir() -> Path:
    return shared_file(f"weights/official/{EMT_X2}").parents[1]


def test_registry_entries_are_consistent():
    names = hub.official_names()
    assert len(names) == len(set(names))
    for entry in hub.official_weights():
        assert re.fullmatch(r"[a-z0-9_]+", entry.name), entry.name
        assert f"x{entry.scale}" in entry.name
        assert entry.url.startswith("https://")
        assert entry.licence
        if entry.available:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
            assert entry.size and entry.size > 0
            assert "/raw/" in entry.url
    available = {w.name for w in hub.official_weights() if w.available}
    assert available == {
        "emt_x2_official",
        "emt_x3_official",
        "emt_x4_official",
        "fmen_s_x4_official",
        "fmen_s_x4_ntire22",
        "ditn_real_x4_official",
        "ditn_real_gan_x4_official",
    }
    assert not hub.get_official("esc_x4_official").available
    assert not hub.get_official("ditn_tiny_x2_official").available


def test_registered_hashes_match_the_shared_official_files():
    for entry in hub.official_weights():
        if entry.available:
            path = shared_file(f"weights/official/{entry.path}")
            assert path.stat().st_size == entry.size, entry.name
            assert hub.file_sha256(path) == entry.sha256, entry.name


def test_find_official_prefers_downloadable_entries():
    assert hub.find_official("emt", 3) == "emt_x3_official"
    assert hub.find_official("fmen_s", 4) == "fmen_s_x4_official"
    assert hub.find_official("ditn_real", 4) == "ditn_real_x4_official"
    assert hub.find_official("esc", 2) == "esc_x2_official"
    assert hub.find_official("fmen_s", 2) is None


def test_download_verifies_and_caches(serve, official_dir, tmp_path):
    mirror = serve(official_dir)
    path = hub.fetch_weights("emt_x2_official", progress=False)
    assert path == tmp_path / "cache" / "weights" / EMT_X2
    assert hub.file_sha256(path) == hub.get_official("emt_x2_official").sha256
    assert mirror.requests == [f"/{EMT_X2}"]
    assert hub.fetch_weights("emt_x2_official", progress=False) == path
    assert mirror.requests == [f"/{EMT_X2}"]  # second call: no HTTP request
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_corrupt_cached_file_is_replaced(serve, official_dir):
    mirror = serve(official_dir)
    cached = hub.cached_path("emt_x2_official")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    path = hub.fetch_weights("emt_x2_official", progress=False)
    assert hub.file_sha256(path) == hub.get_official("emt_x2_official").sha256
    assert len(mirror.requests) == 1


def test_wrong_hash_fails_and_leaves_no_file(serve, tmp_path):
    bad_mirror = tmp_path / "bad"
    (bad_mirror / "EMT").mkdir(parents=True)
    (bad_mirror / EMT_X2).write_bytes(b"not the EMT checkpoint" * 1000)
    serve(bad_mirror)
    with pytest.raises(DownloadError, match="SHA-256"):
        hub.fetch_weights("emt_x2_official", progress=False)
    folder = hub.cached_path("emt_x2_official").parent
    assert not folder.exists() or not any(folder.iterdir())


def test_missing_file_on_mirror_is_a_download_error(serve, tmp_path):
    serve(tmp_path)
    with pytest.raises(DownloadError, match="HTTP 404"):
        hub.fetch_weights("emt_x2_official", progress=False)


def test_unreachable_server_is_a_one_line_download_error(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path))
    monkeypatch.setenv("LIGHTSR_WEIGHTS_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as info:
        hub.fetch_weights("emt_x2_official", progress=False)
    message = str(info.value)
    assert "\n" not in message and "emt_x2_official" in message
    assert not any(tmp_path.rglob("*.pth*"))


def test_unavailable_and_unknown_names():
    with pytest.raises(DownloadError, match=r"releases/tag/1\.0\.0"):
        hub.fetch_weights("esc_x4_official")
    with pytest.raises(CheckpointError, match="no such checkpoint file or published weights name"):
        hub.fetch_weights("no_such_model")


def test_load_model_by_name_downloads_through_the_mirror(serve, official_dir):
    mirror = serve(official_dir)
    model = lightsr.load_model("emt_x2_official")
    assert (model.variant, model.scale) == ("emt", 2)
    assert mirror.requests == [f"/{EMT_X2}"]


def test_cli_download(serve, official_dir, capsys):
    mirror = serve(official_dir)
    assert main(["download", "emt_x2_official"]) == 0
    name, path = capsys.readouterr().out.strip().split("\t")
    assert name == "emt_x2_official" and Path(path).is_file()
    assert len(mirror.requests) == 1
    assert main(["download"]) == 2
    assert main(["download", "esc_x2_official"]) == 2
    assert "cannot be downloaded automatically" in capsys.readouterr().err


def test_upscale_quality_best_runs_official_emt_through_the_mirror(
    serve, official_dir, tmp_path, capsys
):
    mirror = serve(official_dir)
    image = read_image(shared_file("data/Set5/LR_bicubic/X2/birdx2.png"))[:20, :18].copy()
    write_image(tmp_path / "in.png", image)
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--scale", "2"]
    assert main([*args, "--quality", "best", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "emt" and "using EMT" in captured.err
    assert mirror.requests == [f"/{EMT_X2}"]
    expected = lightsr.upscale(image, model=lightsr.load_model("emt_x2_official"))
    assert (read_image(tmp_path / "out.png") == expected).all()
