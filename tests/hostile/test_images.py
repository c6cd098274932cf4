"""Hostile images: bombs, truncated files, tiny images, formats that cannot hold the output.

Each case has its expected exit code and one line on stderr naming the file and the reason.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from lightsr.io import encode_image, read_image, write_image
from tests.hostile import corpus

# (format, declared width, declared height) of header bombs.
BOMBS = [
    ("png", 100_000, 100_000),
    ("jpg", 65_000, 65_000),
    ("webp", 16_384, 16_384),
    ("tif", 100_000, 100_000),
    ("bmp", 100_000, 100_000),
]


@pytest.mark.parametrize(("image_format", "width", "height"), BOMBS)
def test_header_bomb_is_refused_before_decoding(tmp_path, tiny, cli, image_format, width, height):
    bomb = corpus.header_bomb(tmp_path / f"bomb.{image_format}", image_format, width, height)
    code, _, err = cli("upscale", bomb, "-o", tmp_path / "out.png", "--max-pixels", 10**8)
    assert code == 1
    assert len(err) == 1
    assert f"bomb.{image_format}: {width}x{height}" in err[0]
    assert "over the pixel limit of 100.0 MP" in err[0]
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("image_format", corpus.FORMATS)
@pytest.mark.parametrize("fraction", [0.002, 0.5, 0.95])
def test_truncated_file_fails_on_one_line(tmp_path, tiny, cli, image_format, fraction):
    cut = corpus.truncated(tmp_path / f"cut.{image_format}", image_format, fraction)
    code, _, err = cli("upscale", cut, "-o", tmp_path / "out.png")
    assert code == 1
    assert len(err) == 1 and f"cut.{image_format}" in err[0]
    assert any(word in err[0] for word in ("truncated", "damaged", "empty"))
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"GIF89a" + bytes(40), "not a supported image")],
)
def test_not_an_image(tmp_path, tiny, cli, content, reason):
    (tmp_path / "x.png").write_bytes(content)
    code, _, err = cli("upscale", tmp_path / "x.png", "-o", tmp_path / "out.png")
    assert code == 1 and len(err) == 1 and reason in err[0]


def test_the_20000_bomb_stays_under_200_mib(tmp_path):
    """Peak RSS of the real command on a valid 1.2 MB PNG of 20000x20000 pixels.

    Measured in a fresh wrapper process whose only child is ``lightsr``, so that
    ``RUSAGE_CHILDREN`` holds that process's peak alone.
    """
    bomb = corpus.png_bomb(tmp_path / "bomb.png", 20_000)
    assert bomb.stat().st_size < 2 << 20
    command = [sys.executable, "-m", "lightsr", "upscale", str(bomb), "-o", str(tmp_path / "o.png")]
    wrapper = (
        "import resource, subprocess, sys, json\n"
        f"done = subprocess.run({command!r}, capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps([done.returncode, done.stderr, peak]))\n"
    )
    run = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True)
    code, stderr, peak = json.loads(run.stdout)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "20000x20000 PNG (400.0 MP) is over the pixel limit" in lines[0]
    assert peak < 200 << 20, f"peak RSS {peak / 2**20:.0f} MiB"
    assert not (tmp_path / "o.png").exists()


def test_bomb_limit_is_configurable(tmp_path, tiny, cli):
    bomb = corpus.header_bomb(tmp_path / "big.png", "png", 3000, 3000)
    code, _, err = cli("upscale", bomb, "-o", tmp_path / "o.png", "--max-pixels", 1000)
    assert code == 1 and "3000x3000 PNG (9.0 MP) is over the pixel limit of 0.0 MP" in err[0]
    with pytest.raises(Exception, match="over the pixel limit"):
        read_image(bomb, max_pixels=1000)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 1)])
def test_tiny_images_are_upscaled_with_their_colours(tmp_path, cli, size):
    """With the built-in model: a uniform tiny image stays that colour, at the right size."""
    height, width = size
    color = np.array([200, 60, 30], np.uint8)
    write_image(tmp_path / "dot.png", np.tile(color, (height, width, 1)))
    code, _, err = cli("upscale", tmp_path / "dot.png", "-o", tmp_path / "out.png", "--json")
    assert code == 0 and err == []
    out = read_image(tmp_path / "out.png")
    assert out.shape == (4 * height, 4 * width, 3)
    assert np.abs(out.astype(int) - color).max() <= 3


@pytest.mark.parametrize(
    ("image", "extension", "reason"),
    [
        (corpus.photo(channels=4), "jpg", "has alpha, which JPEG cannot store"),
        (corpus.photo().astype(np.uint16) * 257, "jpg", "is 16-bit, which JPEG cannot store"),
        (corpus.photo().astype(np.uint16) * 257, "webp", "is 16-bit, which WebP cannot store"),
    ],
)
def test_output_format_is_checked_before_the_model_loads(tmp_path, cli, image, extension, reason):
    write_image(tmp_path / "in.png", image)
    # 'emt' would need a download, which fails offline: the check comes before any loading.
    args = ("upscale", tmp_path / "in.png", "-o", tmp_path / f"out.{extension}", "--model", "emt")
    code, _, err = cli(*args)
    assert code == 1 and len(err) == 1 and reason in err[0]


def test_output_side_over_the_format_maximum(tmp_path, cli):
    bomb = corpus.header_bomb(tmp_path / "wide.png", "png", 5000, 10)
    code, _, err = cli("upscale", bomb, "-o", tmp_path / "out.webp", "--model", "emt")
    assert code == 1 and "20000x40 output is over WebP's maximum side of 16383" in err[0]


@pytest.mark.parametrize("verbose", [False, True])
def test_libpng_warnings_only_with_verbose(tmp_path, tiny, capfd, verbose):
    """A PNG with a damaged ancillary chunk decodes, but libpng warns on file descriptor 2."""
    from lightsr.cli import main

    data = encode_image(corpus.photo(), ".png").tobytes()
    comment = b"tEXt" + b"Comment\x00hi"
    bad_crc = struct.pack(">I", len(comment) - 4) + comment + bytes(4)
    (tmp_path / "in.png").write_bytes(data[:33] + bad_crc + data[33:])
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png")]
    assert main([*args, "--verbose"] if verbose else args) == 0
    assert ("libpng warning" in capfd.readouterr().err) == verbose
