"""Hostile option values and what users expect of outputs: one line, exit code 2, nothing
written; --overwrite alike for every command; folders that mix bad and good images."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lightsr.cli import build_parser
from lightsr.errors import EXIT_CODES_HELP, EXIT_ERROR, EXIT_INTERNAL, EXIT_SOME_FAILED
from lightsr.io import read_image, write_image
from tests.hostile import corpus


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--scale", "0"], "--scale must be between 1 and 8, got 0"),
        (["--scale", "-3"], "--scale must be between 1 and 8, got -3"),
        (["--tile", "-1"], "--tile must be positive, got -1"),
        (["--tile-overlap", "-5"], "--tile-overlap must be >= 0"),
        (["--max-memory", "0"], "--max-memory must be positive"),
        (["--quality", "500"], "--quality must be between 1 and 101"),
        (["--threads", "0"], "--threads must be positive"),
        (["--outscale", "-2"], "--outscale must be positive"),
        (["--max-pixels", "-1"], "--max-pixels must be >= 0"),
        (["--suffix", "/../../evil"], "--suffix must be part of a file name"),
        (["--suffix", "x/../../../evil"], "--suffix must be part of a file name"),
        (["--format", "../x"], "unknown output format"),
        (["--tile", "abc"], "invalid int value"),
    ],
)
def test_hostile_upscale_options(tmp_path, tiny, cli, options, message):
    write_image(tmp_path / "in" / "a.png", corpus.photo())
    code, _, err = cli("upscale", tmp_path / "in", "-o", tmp_path / "out", *options)
    assert code == EXIT_ERROR
    assert message in err[-1] and sum(not line.startswith(" ") for line in err) <= 2
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["a.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--data", "Set5", "--scale", "0"], "scale must be an integer from 2 to 8"),
        (["eval", "--data", "../no/such/set", "--model", "bicubic"], "data folder not found"),
        (["eval", "--data", "Set5", "--model", "bicubic", "--threads", "0"], "threads must be"),
        (["export", "--model", "fmen_s", "--scale", "0", "-o", "{tmp}/m.onnx"], "--scale"),
        (
            [
                "export",
                "--model",
                "fmen_s",
                "--scale",
                "4",
                "-o",
                "{tmp}/m.onnx",
                "--static",
                "0x0",
            ],
            "--static",
        ),
        (
            ["export", "--model", "fmen_s", "--scale", "4", "-o", "{tmp}/m.onnx", "--opset", "1"],
            "--opset must be at least",
        ),
        (["convert", "{tmp}/none.pth", "{tmp}/o.txt"], "output must end in .safetensors"),
        (["convert", "{tmp}/none.pth", "{tmp}/o.safetensors"], "no such checkpoint file"),
    ],
)
def test_hostile_values_of_other_commands(tmp_path, cli, args, message):
    code, _, err = cli(*(arg.format(tmp=tmp_path) for arg in args))
    assert code == EXIT_ERROR and len(err) == 1 and message in err[0]
    assert list(tmp_path.iterdir()) == []


def test_output_path_with_dot_dot_stays_where_it_resolves(tmp_path, tiny, cli):
    write_image(tmp_path / "in" / "a.png", corpus.photo())
    out = tmp_path / "in" / ".." / "out"
    assert cli("upscale", tmp_path / "in", "-o", out)[0] == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_x4.png"]


@pytest.mark.parametrize(
    "command",
    [
        ("upscale", "{tmp}/in.png", "-o", "{out}"),
        ("convert", "{ckpt}", "{out}"),
        ("reparam", "{ckpt}", "{out}"),
        ("export", "--weights", "{ckpt}", "-o", "{out}"),
    ],
)
def test_existing_output_needs_overwrite_for_every_command(tmp_path, cli, command):
    """Same rule, same words, same code everywhere: checked before any work."""
    ckpt = tmp_path / "w.pth"
    corpus.bad_checkpoint(ckpt, "valid")
    write_image(tmp_path / "in.png", corpus.photo())
    suffix = {"upscale": ".png", "export": ".onnx"}.get(command[0], ".safetensors")
    out = tmp_path / f"existing{suffix}"
    out.write_bytes(b"keep me")
    code, _, err = cli(*(arg.format(tmp=tmp_path, out=out, ckpt=ckpt) for arg in command))
    assert code == EXIT_ERROR and len(err) == 1
    assert err[0].endswith(f"{out}: output exists; use --overwrite to replace it")
    assert out.read_bytes() == b"keep me"


def test_overwrite_replaces(tmp_path, tiny, cli):
    ckpt = corpus.bad_checkpoint(tmp_path / "w.pth", "valid")
    (tmp_path / "o.safetensors").write_bytes(b"old")
    assert cli("convert", ckpt, tmp_path / "o.safetensors", "--overwrite")[0] == 0
    assert (tmp_path / "o.safetensors").read_bytes() != b"old"


def test_folder_output_that_is_a_file_fails_before_any_work(tmp_path, cli):
    write_image(tmp_path / "in" / "a.png", corpus.photo())
    (tmp_path / "out").write_bytes(b"a file")
    # 'emt' would need a download: the refusal comes before any model is loaded.
    code, _, err = cli("upscale", tmp_path / "in", "-o", tmp_path / "out", "--model", "emt")
    assert code == EXIT_ERROR and len(err) == 1 and "is a file" in err[0]


def test_mixed_folder_finishes_the_good_images(tmp_path, tiny, cli):
    folder = tmp_path / "in"
    for name in ("good1.png", "good2.jpg", "good3.webp"):
        write_image(folder / name, corpus.photo())
    corpus.png_bomb(folder / "bomb.png", 20_000)
    corpus.header_bomb(folder / "huge.tif", "tif", 100_000, 100_000)
    corpus.truncated(folder / "cut_bmp.bmp", "bmp", 0.5)
    corpus.truncated(folder / "cut_jpg.jpg", "jpg", 0.3)
    (folder / "text.png").write_text("not an image")
    write_image(folder / "tiny.png", corpus.photo(1, 1))
    write_image(folder / "rgba.png", corpus.photo(channels=4))
    (tmp_path / "in" / "sub").mkdir()
    code, out, err = cli("upscale", folder, "-o", tmp_path / "out", "--format", "jpg")
    assert code == EXIT_SOME_FAILED
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["good1_x4.jpg", "good2_x4.jpg", "good3_x4.jpg", "tiny_x4.jpg"]
    failed = ["bomb.png", "huge.tif", "cut_bmp.bmp", "cut_jpg.jpg", "text.png", "rgba.png"]
    failures = [line for line in err if line.startswith("lightsr upscale: failed: ")]
    assert len(failures) == len(failed)  # other lines: progress, every few seconds
    assert all(any(name in line for line in failures) for name in failed)
    assert "upscaled 4 of 10 images, 6 failed" in out


def test_rerun_with_skip_existing_does_no_work(tmp_path, tiny, cli):
    write_image(tmp_path / "photos" / "a.png", corpus.photo())
    write_image(tmp_path / "photos" / "b.png", corpus.photo(seed=1))
    args = ("upscale", tmp_path / "photos", "-o", tmp_path / "photos")
    assert cli(*args)[0] == 0
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "photos").iterdir()}
    assert sorted(first) == ["a.png", "a_x4.png", "b.png", "b_x4.png"]
    code, _, err = cli(*args)  # without a flag: nothing done, one line, exit 2
    assert code == EXIT_ERROR and "(and 1 more): output exists" in err[0]
    code, out, err = cli(*args, "--skip-existing")
    assert code == 0 and err == [] and "2 skipped" in out
    # The earlier outputs in the input folder are not inputs (no a_x4_x4.png).
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "photos").iterdir()} == first


def test_outputs_below_the_input_folder_are_not_inputs(tmp_path, tiny, cli):
    write_image(tmp_path / "photos" / "a.png", corpus.photo())
    args = ("upscale", tmp_path / "photos", "-o", tmp_path / "photos" / "big", "--recursive")
    assert cli(*args)[0] == 0
    assert cli(*args, "--skip-existing")[0] == 0
    assert [p.name for p in (tmp_path / "photos" / "big").rglob("*")] == ["a_x4.png"]


def test_outscale(tmp_path, tiny, cli):
    write_image(tmp_path / "a.png", corpus.photo(40, 56))
    assert cli("upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--outscale", "3.5")[0] == 0
    assert read_image(tmp_path / "o" / "a_x3.5.png").shape == (140, 196, 3)


def test_exit_codes_are_documented():
    epilog = build_parser().epilog
    assert epilog == EXIT_CODES_HELP
    for code in (0, EXIT_SOME_FAILED, EXIT_ERROR, EXIT_INTERNAL, 130):
        assert f"\n  {code} " in "\n" + epilog


def test_internal_errors_are_one_line(tmp_path, cli, monkeypatch):
    import lightsr.api

    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("a bug\nwith lines")

    monkeypatch.setattr(lightsr.api, "_load_network", broken)
    write_image(tmp_path / "a.png", corpus.photo())
    code, _, err = cli("upscale", tmp_path / "a.png", "-o", tmp_path / "o.png")
    assert (
        code == EXIT_INTERNAL and len(err) == 1 and "internal error: LinAlgError: a bug" in err[0]
    )
    with pytest.raises(np.linalg.LinAlgError):
        cli("upscale", tmp_path / "a.png", "-o", tmp_path / "o.png", "--verbose")


def test_eval_finds_standard_sets_by_name(tmp_path, cli, monkeypatch):
    write_image(tmp_path / "sets" / "Mine" / "HR" / "a.png", corpus.photo(48, 48))
    monkeypatch.setenv("LIGHTSR_DATA", str(tmp_path / "sets"))
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("eval", "--data", "Mine", "--scale", "4", "--model", "bicubic", "--json")
    assert code == 0 and '"dataset": "Mine"' in out
    monkeypatch.delenv("LIGHTSR_DATA")
    code, _, err = cli("eval", "--data", "Mine", "--scale", "4", "--model", "bicubic")
    assert code == EXIT_ERROR and len(err) == 1 and "LIGHTSR_DATA" in err[0]


def test_eval_on_images_too_small_for_ssim(tmp_path, cli):
    write_image(tmp_path / "set" / "HR" / "small.png", corpus.photo(16, 16))
    code, _, err = cli("eval", "--data", tmp_path / "set", "--scale", "4", "--model", "bicubic")
    assert code == EXIT_ERROR and len(err) == 1
    assert "small.png: 16x16" in err[0] and "SSIM needs 11x11 pixels" in err[0]


def test_shared_standard_sets_resolve(cli, shared, monkeypatch):
    shared("data/Set5/HR")
    monkeypatch.delenv("LIGHTSR_DATA", raising=False)
    monkeypatch.chdir(os.path.dirname(__file__))
    code, out, _ = cli("eval", "--data", "Set5", "--scale", "4", "--model", "bicubic", "--json")
    assert code == 0 and '"dataset": "Set5"' in out
