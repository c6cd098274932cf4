"""lightsr.upscale (API) and `lightsr upscale` (CLI), run in-process.

Most tests use :mod:`tiny_sr` (a small conv net) in place of the built-in model so that
they are fast and independent of trained weights; one test loads a real checkpoint file.
"""

import json
import struct

import numpy as np
import pytest
import torch

import lightsr.api
from lightsr.api import Upscaler, upscale
from lightsr.archs import build_model
from lightsr.checkpoint import save_safetensors
from lightsr.cli import main
from lightsr.errors import ImageError, UsageError
from lightsr.imresize import imresize
from lightsr.io import read_image, write_image
from tests.conftest import shared_file
from tests.tiny_sr import tiny_model


@pytest.fixture(scope="module")
def photo():
    """A real 64x48 RGB crop (Set5 'woman' x4 LR), uint8."""
    return read_image(shared_file("data/Set5/LR_bicubic/X4/womanx4.png"))[:64, :48].copy()


@pytest.fixture
def tiny(monkeypatch):
    """Make every model name (and the built-in default) resolve to the tiny test network."""

    def load(model, scale, weights):
        return tiny_model(scale or 4)

    monkeypatch.setattr(lightsr.api, "_load_network", load)


def _exif_rotated_jpeg(path, image, orientation):
    """Write ``image`` as JPEG with an EXIF IFD0 holding only the Orientation tag."""
    plain = write_image(path, image, quality=95).read_bytes()
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    path.write_bytes(plain[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + plain[2:])


# ----------------------------------------------------------------------------- API


def test_rgb_uint8(photo):
    out = upscale(photo, model=tiny_model())
    assert out.dtype == np.uint8 and out.shape == (256, 192, 3)
    # The tiny net is nearest upscaling plus a bounded correction.
    nearest = photo.repeat(4, axis=0).repeat(4, axis=1).astype(int)
    assert np.abs(out.astype(int) - nearest).max() <= 52


def test_sixteen_bit_in_sixteen_bit_out(photo):
    model = tiny_model()
    photo16 = photo.astype(np.uint16) * 257 + 128
    out16 = upscale(photo16, model=model)
    out8 = upscale(photo, model=model)
    assert out16.dtype == np.uint16 and out16.shape == out8.shape
    assert np.abs(out16 / 257.0 - out8).max() <= 1.0
    # Precision beyond 8 bits is kept, not truncated.
    assert np.count_nonzero(out16 % 257) > out16.size // 2


def test_gray_in_gray_out(photo):
    model = tiny_model()
    gray = photo[..., 0]
    out = upscale(gray, model=model)
    assert out.shape == (256, 192) and out.dtype == np.uint8
    rgb = upscale(np.repeat(gray[..., None], 3, axis=2), model=model)
    assert np.abs(out.astype(int) - rgb.mean(axis=2)).max() <= 1


def test_rgba_alpha_goes_through_the_network(photo):
    model = tiny_model()
    alpha = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (64, 1))
    out = upscale(np.dstack([photo, alpha]), model=model)
    assert out.shape == (256, 192, 4)
    assert np.array_equal(out[..., :3], upscale(photo, model=model))
    assert np.array_equal(out[..., 3], upscale(alpha, model=model))
    # The gradient survives: left edge transparent, right edge opaque.
    assert out[:, :4, 3].max() < 40 and out[:, -4:, 3].min() > 215


def test_constant_alpha_stays_constant(photo):
    out = upscale(np.dstack([photo, np.full((64, 48), 200, np.uint8)]), model=tiny_model())
    assert np.all(out[..., 3] == 200)


def test_bicubic_is_matlab_imresize(photo):
    assert np.array_equal(upscale(photo, model="bicubic", scale=3), imresize(photo, 3))


def test_path_input_and_reuse_of_one_upscaler(tmp_path, photo):
    path = write_image(tmp_path / "in.png", photo)
    upscaler = Upscaler(model=tiny_model(), tile=32)
    assert upscaler.name == "tiny" and upscaler.scale == 4
    assert np.array_equal(upscaler(path), upscaler(str(path)))


def test_api_usage_errors(photo):
    with pytest.raises(UsageError, match="backend 'tensorrt'"):
        upscale(photo, model="bicubic", backend="tensorrt")
    with pytest.raises(UsageError, match="bf16"):
        upscale(photo, model="bicubic", backend="onnxruntime", precision="bf16")
    with pytest.raises(UsageError, match="precision"):
        upscale(photo, model="bicubic", precision="fp8")
    with pytest.raises(UsageError, match="x4, not x2"):
        upscale(photo, model=tiny_model(4), scale=2)
    with pytest.raises(ImageError, match="uint8 or uint16"):
        upscale(photo.astype(np.float64), model="bicubic")


# ----------------------------------------------------------------------------- CLI


def test_cli_single_file(tmp_path, photo, tiny, capsys):
    write_image(tmp_path / "in.png", photo)
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")]) == 0
    assert read_image(tmp_path / "out.png").shape == (256, 192, 3)
    assert "upscaled 1 of 1 images" in capsys.readouterr().out


def test_cli_sixteen_bit_png(tmp_path, photo, tiny):
    write_image(tmp_path / "in.png", photo.astype(np.uint16) * 257 + 3)
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")]) == 0
    out = read_image(tmp_path / "out.png")
    assert out.dtype == np.uint16 and out.max() > 255 and np.any(out % 257)


def test_cli_gray_and_rgba(tmp_path, photo, tiny):
    write_image(tmp_path / "in" / "gray.png", photo[..., 1])
    alpha = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (64, 1))
    write_image(tmp_path / "in" / "rgba.png", np.dstack([photo, alpha]))
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 0
    assert read_image(tmp_path / "out" / "gray_x4.png").shape == (256, 192)
    rgba = read_image(tmp_path / "out" / "rgba_x4.png")
    assert rgba.shape == (256, 192, 4) and rgba[:, 0, 3].max() < rgba[:, -1, 3].min()


def test_cli_applies_jpeg_exif_rotation(tmp_path, photo, tiny):
    _exif_rotated_jpeg(tmp_path / "rotated.jpg", photo, orientation=6)
    assert main(["upscale", str(tmp_path / "rotated.jpg"), "-o", str(tmp_path / "out.png")]) == 0
    out = read_image(tmp_path / "out.png")
    # Orientation 6 shows the stored 64x48 image turned 90° clockwise: 48 high, 64 wide.
    assert out.shape == (192, 256, 3)
    assert np.array_equal(out, upscale(read_image(tmp_path / "rotated.jpg"), tiny_model()))


def test_cli_folder_with_a_corrupt_file_continues(tmp_path, photo, tiny, capsys):
    for name in ("a.png", "c.png"):
        write_image(tmp_path / "in" / name, photo)
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "c_x4.png"]
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "b.png" in lines[0] and "failed" in lines[0]
    assert "upscaled 2 of 3 images, 1 failed" in captured.out


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"this is not an image\n", "not a supported image"),
        ("truncated", "truncated"),
    ],
)
def test_cli_reports_bad_files_on_one_line(tmp_path, photo, tiny, capsys, content, reason):
    if content == "truncated":
        data = write_image(tmp_path / "full.png", photo).read_bytes()
        content = data[: len(data) // 2]
    (tmp_path / "bad.png").write_bytes(content)
    assert main(["upscale", str(tmp_path / "bad.png"), "-o", str(tmp_path / "out.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0] and "bad.png" in err[0]
    assert not (tmp_path / "out.png").exists()


def test_cli_one_pixel_image(tmp_path, tiny):
    write_image(tmp_path / "dot.png", np.array([[[10, 200, 30]]], np.uint8))
    assert main(["upscale", str(tmp_path / "dot.png"), "-o", str(tmp_path / "out.png")]) == 0
    assert read_image(tmp_path / "out.png").shape == (4, 4, 3)


def test_cli_existing_output_needs_overwrite(tmp_path, photo, tiny, capsys):
    write_image(tmp_path / "in.png", photo)
    (tmp_path / "out.png").write_bytes(b"keep me")
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")]
    assert main(args) == 2  # nothing done, as for every command that writes
    assert (tmp_path / "out.png").read_bytes() == b"keep me"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0] and "--overwrite" in err[0]
    assert main([*args, "--overwrite"]) == 0
    assert read_image(tmp_path / "out.png").shape == (256, 192, 3)


def test_cli_recursive_mirrors_the_tree_and_json(tmp_path, photo, tiny, capsys):
    write_image(tmp_path / "in" / "top.png", photo)
    write_image(tmp_path / "in" / "sub" / "deep.jpg", photo)
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"]
    assert main([*args, "--format", "png", "--suffix", "_big", "--recursive"]) == 0
    assert (tmp_path / "out" / "top_big.png").is_file()
    assert (tmp_path / "out" / "sub" / "deep_big.png").is_file()
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert summary["succeeded"] == 2 and summary["failed"] == 0 and summary["scale"] == 4
    assert {r["output_size"][0] for r in summary["results"]} == {192}
    # Without --recursive the sub-folder is left alone.
    assert main([*args[:3], str(tmp_path / "flat"), "--json"]) == 0
    assert [p.name for p in (tmp_path / "flat").iterdir()] == ["top_x4.png"]


def test_cli_glob_and_tiling_options(tmp_path, photo, tiny):
    for name in ("x.png", "y.png", "z.jpg"):
        write_image(tmp_path / name, photo)
    pattern = str(tmp_path / "*.png")
    args = ["upscale", pattern, "-o", str(tmp_path / "out"), "--tile", "32", "--max-memory", "64"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_x4.png", "y_x4.png"]
    assert np.array_equal(read_image(tmp_path / "out" / "x_x4.png"), upscale(photo, tiny_model()))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "onnxruntime", "--device", "cuda"], "CPU only"),
        (["--tile", "0"], "--tile"),
        (["--quality", "0"], "--quality"),
        (["--precision", "fp64"], None),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path, photo, tiny, capsys, extra, message):
    write_image(tmp_path / "in.png", photo)
    try:
        code = main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), *extra])
    except SystemExit as exc:  # argparse rejects bad choices itself
        code = exc.code
    assert code == 2
    if message:
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_cli_missing_input_and_name_clash_exit_2(tmp_path, photo, tiny, capsys):
    assert main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    write_image(tmp_path / "a" / "p.png", photo)
    write_image(tmp_path / "b" / "p.png", photo)
    assert main(["upscale", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path)]) == 2
    assert "would both be written" in capsys.readouterr().err
    assert main(["upscale", str(tmp_path / "a"), "-o", str(tmp_path / "a"), "--suffix", ""]) == 2
    assert "replace the input" in capsys.readouterr().err


def test_cli_with_a_real_checkpoint(tmp_path, photo, capsys):
    # The real loading path: a random-init ESC-light x2 saved as a lightsr checkpoint; the
    # scale (and the output suffix) come from the file.
    torch.manual_seed(0)
    weights = tmp_path / "esc_light_x2.safetensors"
    metadata = {"network": "esc", "variant": "esc_light", "scale": "2"}
    save_safetensors(build_model("esc_light", 2).state_dict(), weights, metadata)
    write_image(tmp_path / "in" / "ok.png", photo[:20, :24])
    write_image(tmp_path / "in" / "dot.png", photo[:1, :1])
    code = main(
        ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(weights)]
    )
    assert code == 0
    assert read_image(tmp_path / "out" / "ok_x2.png").shape == (40, 48, 3)
    # Smaller than ESC's window: edge-padded, upscaled, cropped (as for every network).
    assert read_image(tmp_path / "out" / "dot_x2.png").shape == (2, 2, 3)


def test_cli_quality_best_picks_emt_and_says_so(tmp_path, photo, monkeypatch, capsys):
    requested = []

    def load(model, scale, weights):
        requested.append(model)
        return tiny_model(scale or 4)

    monkeypatch.setattr(lightsr.api, "_load_network", load)
    write_image(tmp_path / "in.png", photo)
    out = tmp_path / "o.jpg"
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(out), "--quality", "best"]) == 0
    assert requested == ["emt"] and "using EMT with its official weights" in capsys.readouterr().err
    # A file quality may come beside the preset; 'fast' is the built-in default.
    args = ["--quality", "best", "--quality", "60", "--overwrite"]
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(out), *args]) == 0
    small = out.stat().st_size
    args = ["--quality", "fast", "--quality", "100", "--overwrite"]
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(out), *args]) == 0
    assert requested == ["emt", "emt", None] and out.stat().st_size > small

    args = ["--quality", "best", "--model", "fmen_s"]
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.png"), *args]) == 2
    assert "drop --model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(
            ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.png"), "--quality", "hi"]
        )
    assert exc.value.code == 2


def test_cli_quality_real_runs_the_builtin_real_photo_model(tmp_path, photo, capsys):
    write_image(tmp_path / "in" / "a.png", photo[:24, :32])
    out = tmp_path / "out"
    args = ["upscale", str(tmp_path / "in"), "-o", str(out), "--quality", "real", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "ditn_real"
    assert "real-photo model (DITN-Real GAN, x4)" in captured.err
    assert read_image(out / "a_x4.png").shape == (96, 128, 3)
    # The real-photo model is x4 only: another --scale is refused with the way to get it.
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "--quality", "real"]
    assert main([*args, "--scale", "2"]) == 2
    assert "--outscale 2" in capsys.readouterr().err
    assert main([*args, "--outscale", "2"]) == 0
    assert read_image(tmp_path / "o2" / "a_x2.png").shape == (48, 64, 3)
