"""lightsr.distributed and `lightsr upscale --ray`: Set14 on a local 2-CPU Ray instance.

One Ray instance serves the module (starting Ray takes seconds); :func:`upscale_dataset`
uses it because Ray is already initialised. Outputs are compared byte for byte with plain
`lightsr upscale` of the same files, run in-process with the built-in x4 model.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import ray
import torch

from lightsr.cli import main
from lightsr.distributed import MANIFEST_NAME, _UpscaleActor, plan_dataset, upscale_dataset
from lightsr.errors import UsageError
from lightsr.io import read_image, write_image
from lightsr.metadata import Metadata, read_metadata
from tests.conftest import shared_file

SET14 = ["baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers"]
SET14 += ["foreman", "lenna", "man", "monarch", "pepper", "ppt3", "zebra"]


@pytest.fixture(scope="module")
def set14(tmp_path_factory):
    """A folder of Set14 x4 LR images (one of them grayscale)."""
    folder = tmp_path_factory.mktemp("set14")
    for name in SET14:
        shutil.copy(shared_file(f"data/Set14/LR_bicubic/X4/{name}x4.png"), folder)
    return folder


@pytest.fixture(scope="module")
def reference(set14, tmp_path_factory):
    """Plain `lightsr upscale` of the folder: {output name: bytes}.

    With one thread, as each Ray actor runs: oneDNN's sums may depend on the thread count
    (seen on an AVX2 EPYC: one pixel of baboon one level apart between 1 and 2 threads).
    """
    out = tmp_path_factory.mktemp("reference")
    assert main(["upscale", str(set14), "-o", str(out), "--threads", "1", "--json"]) == 0
    return {path.name: path.read_bytes() for path in out.iterdir()}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


def _outputs(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.suffix == ".png"}


def _manifest(folder, cut_short=None):
    lines = (folder / MANIFEST_NAME).read_text().splitlines()
    return [json.loads(line) for line in lines if line != cut_short]


def _actor_pids():
    """Processes of this test's Ray actors (Ray names them after the callable class)."""
    return [
        process.pid
        for process in psutil.Process().children(recursive=True)
        if "_UpscaleActor" in " ".join(process.cmdline())
    ]


@pytest.mark.slow
def test_outputs_equal_plain_upscale_and_a_rerun_does_no_work(
    local_ray, set14, reference, tmp_path
):
    out = tmp_path / "out"
    report = upscale_dataset(str(set14), out)
    assert (report.written, report.skipped, report.failures) == (len(SET14), 0, [])
    assert _outputs(out) == reference
    records = _manifest(out)
    assert sorted(r["output"] for r in records) == sorted(reference)
    assert all(r["bytes"] == len(reference[r["output"]]) for r in records)

    started = []
    again = upscale_dataset(str(set14), out, on_start=started.append)
    assert (again.written, again.skipped, started) == (0, len(SET14), [0])
    assert len(_manifest(out)) == len(SET14)


@pytest.mark.slow
def test_a_killed_actor_is_retried_and_every_image_is_written_once(
    local_ray, set14, reference, tmp_path
):
    out = tmp_path / "out"
    killed = {}

    def kill_an_actor_after_the_first_output():
        deadline = time.monotonic() + 300
        while not any(out.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = _actor_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed["pid"] = pids[0]
            killed["outputs"] = len(list(out.glob("*.png")))

    killer = threading.Thread(target=kill_an_actor_after_the_first_output)
    killer.start()
    report = upscale_dataset(str(set14), out, actors=2)
    killer.join()
    assert killed, "no actor process was found to kill"
    assert killed["outputs"] < len(SET14), "the actor was killed after the run's end"
    assert not psutil.pid_exists(killed["pid"]) or killed["pid"] not in _actor_pids()
    assert (report.written, report.failures) == (len(SET14), [])
    assert _outputs(out) == reference  # every image once, none truncated
    assert not list(out.glob(".*.tmp"))
    assert sorted(r["output"] for r in _manifest(out)) == sorted(reference)
    assert upscale_dataset(str(set14), out).written == 0


@pytest.mark.slow
def test_cli_resumes_from_a_uri_input(local_ray, set14, reference, tmp_path, capsys, monkeypatch):
    """`--ray` with a file:// URI and a relative OUT: a recorded output, an unrecorded
    complete one, a truncated one and a cut-short manifest line; only the missing and
    broken images are redone."""
    images = tmp_path / "in"
    images.mkdir()
    names = ["comic", "face", "foreman", "bridge"]
    for name in names:
        shutil.copy(set14 / f"{name}x4.png", images)
    # A JPEG with an ICC profile and DPI, which outputs keep, read here from the URI's bytes.
    jpeg = write_image(
        images / "tagged.jpg",
        read_image(set14 / "zebrax4.png"),
        quality=90,
        metadata=Metadata(icc=b"\x00" * 200, dpi=(300.0, 300.0)),
    )
    plain = tmp_path / "plain.jpg"
    assert main(["upscale", str(jpeg), "-o", str(plain), "--threads", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    out.mkdir()
    (out / "comicx4_x4.png").write_bytes(reference["comicx4_x4.png"])
    (out / "facex4_x4.png").write_bytes(reference["facex4_x4.png"])
    (out / "foremanx4_x4.png").write_bytes(reference["foremanx4_x4.png"][:500])
    record = {"input": "x", "output": "comicx4_x4.png", "bytes": len(reference["comicx4_x4.png"])}
    cut_short = '{"input": "cut sh'
    (out / MANIFEST_NAME).write_text(json.dumps(record) + "\n" + cut_short)

    monkeypatch.chdir(tmp_path)
    argv = ["upscale", images.as_uri(), "-o", "out", "--ray", "--ray-actors", "1", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["images"], summary["skipped"], summary["written"]) == (5, 2, 3)
    assert summary["actors"] == 1
    expected = {f"{name}x4_x4.png": reference[f"{name}x4_x4.png"] for name in names}
    assert _outputs(out) == expected
    assert (out / "tagged_x4.jpg").read_bytes() == plain.read_bytes()
    assert read_metadata(plain).dpi == (300.0, 300.0)
    first, *added = _manifest(out, cut_short)
    assert first == record
    assert sorted(r["output"] for r in added) == [
        "bridgex4_x4.png",
        "facex4_x4.png",
        "foremanx4_x4.png",
        "tagged_x4.jpg",
    ]
    assert all(r["input"].startswith("file:///") for r in added)
    assert main(argv[:-1]) == 0
    assert capsys.readouterr().out == "nothing to do: all 5 images are already done\n"


def test_an_onnxruntime_actor_keeps_to_its_threads(set14, tmp_path, monkeypatch):
    """The actor class in-process: ONNX Runtime output as plain `lightsr upscale
    --backend onnxruntime`, one intra-op thread, and a bad image is an error record."""
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path / "cache"))
    source = set14 / "facex4.png"
    plain = tmp_path / "plain.png"
    assert main(["upscale", str(source), "-o", str(plain), "--backend", "onnxruntime"]) == 0
    actor = _UpscaleActor({"backend": "onnxruntime", "threads": 1}, quality=None, max_pixels=None)
    assert actor.upscaler.network.session.get_session_options().intra_op_num_threads == 1
    broken = tmp_path / "broken.png"
    broken.write_bytes(source.read_bytes()[:300])
    targets = [tmp_path / "out" / "face.png", tmp_path / "out" / "broken.png"]
    batch = {"input": [str(source), str(broken)], "output": [str(t) for t in targets]}
    records = actor(batch)
    assert records["error"] == ["", f"{broken}: truncated or damaged PNG data"]
    assert targets[0].read_bytes() == plain.read_bytes()
    assert records["bytes"] == [len(plain.read_bytes()), 0]
    assert not targets[1].exists()


def test_uri_and_local_inputs_are_planned_alike(set14, tmp_path):
    local = plan_dataset([str(set14)], tmp_path, "_x4", "webp")
    remote = plan_dataset([set14.as_uri()], tmp_path, "_x4", "webp")
    assert [target for _, target in local] == [target for _, target in remote]
    assert remote[0][0] == (set14 / "baboonx4.png").as_uri()
    assert local[0][1] == tmp_path / "baboonx4_x4.webp"
    with pytest.raises(UsageError, match="would both be written"):
        plan_dataset([str(set14), set14.as_uri()], tmp_path, "_x4")
    with pytest.raises(UsageError, match="no such file"):
        plan_dataset([(tmp_path / "missing").as_uri()], tmp_path, "_x4")


def test_option_errors_fail_before_ray_starts(set14, tmp_path, capsys):
    with pytest.raises(UsageError, match="precision"):
        upscale_dataset(str(set14), tmp_path, precision="fp8")
    if not torch.cuda.is_available():  # Ray started here runs on this machine's devices
        with pytest.raises(UsageError, match="CUDA is not available"):
            upscale_dataset(str(set14), tmp_path, device="cuda")
    assert main(["upscale", str(set14), "-o", str(tmp_path), "--ray-actors", "2"]) == 2
    assert main(["upscale", str(set14), "-o", str(tmp_path), "--ray", "--ray-threads", "0"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "lightsr upscale: error: --ray-actors needs --ray",
        "lightsr upscale: error: --ray-threads must be positive, got 0",
    ]


def test_help_does_not_import_ray():
    code = (
        "import sys\nfrom lightsr.cli import main\ntry:\n    main(['upscale', '--help'])\n"
        "except SystemExit:\n    pass\nassert 'ray' not in sys.modules, 'ray imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--ray [ADDRESS]" in result.stdout
