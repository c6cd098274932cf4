"""Video upscaling on real clips made with PyAV (see ``tests/video_clips.py``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest

import lightsr
from lightsr.api import Upscaler
from lightsr.errors import UsageError, VideoError
from lightsr.video.color import ColorTags, frame_to_rgb, rgb_to_frame
from lightsr.video.pipeline import VideoOptions, transcode
from tests.tiny_sr import tiny_model
from tests.video_clips import Clip, decoded_frames, make_clip, packets

SCALE = 2


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    return Upscaler(tiny_model(scale=SCALE), device="cpu")


def _times(frames: list[av.VideoFrame]) -> list[Fraction]:
    return [frame.pts * frame.time_base for frame in frames]


def _tags(frame: av.VideoFrame) -> tuple[int, int, int, int]:
    return (
        int(frame.colorspace),
        int(frame.color_range),
        int(frame.color_primaries),
        int(frame.color_trc),
    )


def test_cfr_mp4_keeps_frames_timestamps_audio_and_tags(tmp_path, upscaler):
    source = make_clip(tmp_path / "in.mp4", Clip(frames=8))
    target = tmp_path / "out.mp4"
    report = transcode(upscaler, source, target)
    before, after = decoded_frames(source), decoded_frames(target)
    assert report.frames == len(after) == len(before) == 8
    assert _times(after) == _times(before)
    assert all((f.width, f.height) == (64 * SCALE, 48 * SCALE) for f in after)
    assert packets(target, "audio") == packets(source, "audio")
    assert _tags(after[0]) == _tags(before[0]) == (1, 1, 1, 1)
    with av.open(str(target)) as container:
        assert container.streams.video[0].average_rate == 24
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_vfr_mkv_with_subtitles_keeps_every_timestamp(tmp_path, upscaler):
    source = make_clip(tmp_path / "in.mkv", Clip(frames=9, vfr=True, subtitles=True))
    target = tmp_path / "out.mkv"
    transcode(upscaler, source, target, VideoOptions(codec="h264", preset="ultrafast"))
    before, after = decoded_frames(source), decoded_frames(target)
    gaps = {b - a for a, b in zip(_times(before), _times(before)[1:], strict=False)}
    assert len(gaps) > 2  # really variable
    assert _times(after) == _times(before)
    assert packets(target, "audio") == packets(source, "audio")
    assert packets(target, "subtitle") == packets(source, "subtitle")


def test_ten_bit_rotated_h265_stays_ten_bit_and_rotated(tmp_path, upscaler):
    clip = Clip(frames=5, codec="libx265", pix_fmt="yuv420p10le", rotation=90, matrix=9)
    source = make_clip(tmp_path / "in.mp4", clip)
    target = tmp_path / "out.mp4"
    report = transcode(upscaler, source, target, VideoOptions(codec="h265", preset="ultrafast"))
    after = decoded_frames(target)
    assert report.pix_fmt == "yuv420p10le"
    assert [f.format.name for f in after] == ["yuv420p10le"] * 5
    assert after[0].rotation == 90
    assert int(after[0].colorspace) == 9  # BT.2020
    assert int(after[0].color_range) == 1


def test_ffv1_output_equals_per_frame_upscale(tmp_path):
    model = tiny_model(scale=SCALE)
    source = make_clip(tmp_path / "in.mkv", Clip(frames=7, codec="ffv1", audio=False))
    target = tmp_path / "out.mkv"
    upscaler = Upscaler(model, device="cpu")
    # Batches of 3 (the last one short): the batched path must equal one frame at a time.
    options = VideoOptions(codec="ffv1", pix_fmt="bgr0", batch=3)
    transcode(upscaler, source, target, options)
    inputs, outputs = decoded_frames(source), decoded_frames(target)
    assert len(outputs) == len(inputs) == 7
    for frame, result in zip(inputs, outputs, strict=True):
        rgb = frame_to_rgb(frame, ColorTags.of(frame), np.dtype(np.uint8))
        expected = lightsr.upscale(rgb, model=model, device="cpu").astype(int)
        got = result.to_ndarray(format="rgb24").astype(int)
        assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize(
    ("pix_fmt", "flat", "full_range"),
    [
        ("yuv420p", (126, 128, 128), False),  # mid grey
        ("yuv420p", (63, 102, 240), False),  # saturated red-ish
        ("yuv444p", (200, 60, 140), True),
        ("yuv420p10le", (126, 128, 128), False),
    ],
)
def test_flat_colour_round_trips_exactly(tmp_path, pix_fmt, flat, full_range):
    clip = Clip(frames=2, codec="ffv1", pix_fmt=pix_fmt, flat=flat, full_range=full_range)
    source = make_clip(tmp_path / "in.mkv", clip)
    target = tmp_path / "out.mkv"
    transcode(Upscaler("bicubic", scale=SCALE), source, target, VideoOptions(codec="ffv1"))
    before, after = decoded_frames(source)[0], decoded_frames(target)[0]
    assert after.format.name == pix_fmt
    assert _tags(after)[:2] == _tags(before)[:2]
    assert _codes(after) == _codes(before)


def _codes(frame: av.VideoFrame) -> list[list[int]]:
    """The distinct sample values of each plane (a flat frame has one per plane)."""
    dtype = np.uint8 if frame.format.components[0].bits == 8 else np.dtype("<u2")
    codes = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, : plane.width]
        codes.append(np.unique(rows).tolist())
    return codes


def _reference_rgb(code: tuple[int, int, int], kr: float, kb: float) -> np.ndarray:
    """H.273 limited-range 8-bit Y'CbCr → R'G'B' in 0..255, straight from the equations."""
    y = (code[0] - 16) / 219
    cb, cr = (code[1] - 128) / 224, (code[2] - 128) / 224
    r, b = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.array([r, g, b]), 0, 1) * 255


@pytest.mark.parametrize(("matrix", "kr", "kb"), [(1, 0.2126, 0.0722), (6, 0.299, 0.114)])
def test_frames_convert_with_their_own_matrix(matrix, kr, kb):
    frame = av.VideoFrame(16, 8, "yuv420p")
    code = (81, 110, 180)  # inside the RGB gamut of both matrices
    for plane, value in zip(frame.planes, code, strict=True):
        np.frombuffer(plane, np.uint8)[:] = value
    frame.colorspace, frame.color_range = matrix, 1
    rgb = frame_to_rgb(frame, ColorTags.of(frame), np.dtype(np.uint8))
    assert np.abs(rgb[4, 4] - _reference_rgb(code, kr, kb)).max() <= 0.5
    back = rgb_to_frame(rgb, "yuv420p", ColorTags.of(frame))
    codes = [int(np.frombuffer(p, np.uint8)[0]) for p in back.planes]
    assert np.abs(np.subtract(codes, code)).max() <= 1  # 8-bit RGB in between


def test_untagged_matrix_is_stated_for_the_larger_output(tmp_path, upscaler):
    source = make_clip(tmp_path / "in.mkv", Clip(frames=2, matrix=2, audio=False))
    target = tmp_path / "out.mkv"
    transcode(upscaler, source, target)
    assert int(decoded_frames(source)[0].colorspace) == 2
    # SD input: BT.601 was assumed; the HD-sized output says so instead of leaving it open.
    assert int(decoded_frames(target)[0].colorspace) == 6


def test_start_and_duration_cut_a_part(tmp_path, upscaler):
    source = make_clip(tmp_path / "in.mp4", Clip(frames=24, rate=24))
    target = tmp_path / "out.mp4"
    report = transcode(upscaler, source, target, VideoOptions(start=0.25, duration=0.5))
    times = _times(decoded_frames(target))
    assert report.frames == len(times) == 12
    assert times[0] == 0 and times[-1] == Fraction(11, 24)
    audio = packets(target, "audio")
    assert audio and audio[0][0] >= 0 and audio[-1][0] < 0.5


def test_gif_folder_run_writes_mp4(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "anim.gif", Clip(frames=3, codec="gif", pix_fmt="rgb8", audio=False))
    make_clip(folder / "clip.mkv", Clip(frames=3, audio=False))
    result = _cli(folder, "-o", tmp_path / "out", "--model", "bicubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == ["anim_x2.mp4", "clip_x2.mkv"]
    assert len(decoded_frames(tmp_path / "out" / "anim_x2.mp4")) == 3


def test_options_are_checked_before_work(tmp_path):
    with pytest.raises(UsageError, match="unknown codec"):
        VideoOptions(codec="mpeg1").check()
    with pytest.raises(UsageError, match="lossless"):
        VideoOptions(codec="ffv1", crf=10).check()
    with pytest.raises(UsageError, match="cannot encode pixel format"):
        VideoOptions(codec="vp9", pix_fmt="yuv420p10le").check()
    with pytest.raises(UsageError, match="cannot hold h264"):
        lightsr.upscale_video(tmp_path / "in.mp4", tmp_path / "out.webm")


def _cli(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lightsr", "upscale", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_mp4_fails_with_one_line(tmp_path, faststart):
    source = make_clip(tmp_path / "in.mp4", Clip(frames=24, faststart=faststart))
    data = source.read_bytes()
    source.write_bytes(data[: len(data) * 2 // 3])
    target = tmp_path / "out.mp4"
    result = _cli(source, "-o", target, "--model", "bicubic", "--scale", "2")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "frames" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_interrupt_leaves_no_output(tmp_path):
    # Long enough that the signal, sent a second after the output's temporary file appears,
    # lands mid-run on an idle machine too (48 frames could finish in that second).
    source = make_clip(tmp_path / "in.mp4", Clip(width=96, height=64, frames=480))
    target = tmp_path / "out.mp4"
    command = [sys.executable, "-m", "lightsr", "upscale", str(source), "-o", str(target)]
    # A shell starting the tests in the background (`nohup … &`) leaves SIGINT ignored, and
    # children inherit that; Ctrl-C in a terminal reaches a process with the default action.
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".out.mp4.*.tmp")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    time.sleep(1.0)  # mid-run: frames are flowing through the three stages
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "lightsr upscale: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_missing_input_is_one_error(tmp_path, upscaler):
    with pytest.raises(VideoError, match="no such file"):
        transcode(upscaler, tmp_path / "none.mp4", tmp_path / "out.mp4")


def test_help_loads_no_video_libraries():
    code = (
        "import sys\n"
        "from lightsr.cli import main\n"
        "try:\n    main(['upscale', '--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('av', 'lightsr.video.pipeline', 'cv2') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--codec" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("codec", "suffix"), [("vp9", ".webm"), ("av1", ".mkv")])
def test_api_other_codecs(tmp_path, codec, suffix):
    source = make_clip(tmp_path / "in.mkv", Clip(frames=3, audio=False))
    target = tmp_path / f"out{suffix}"
    report = lightsr.upscale_video(source, target, model="bicubic", scale=SCALE, codec=codec)
    assert report.frames == 3 and report.output_size == (64 * SCALE, 48 * SCALE)
    with av.open(str(target)) as container:
        assert container.streams.video[0].codec_context.name in (codec, "libdav1d", "libvpx-vp9")
    assert len(decoded_frames(target)) == 3


def test_container_that_cannot_hold_the_audio_is_one_error(tmp_path):
    source = make_clip(tmp_path / "in.mp4", Clip(frames=2))  # AAC audio: not for WebM
    with pytest.raises(VideoError, match=r"cannot hold the input's audio stream \(aac\)"):
        lightsr.upscale_video(source, tmp_path / "out.webm", model="bicubic", codec="vp9")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_existing_output_is_refused_or_skipped(tmp_path):
    source = make_clip(tmp_path / "in.mp4", Clip(frames=2, audio=False))
    target = tmp_path / "out.mp4"
    target.write_bytes(b"keep me")
    refused = _cli(source, "-o", target, "--model", "bicubic", "--scale", "2")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    skipped = _cli(source, "-o", target, "--model", "bicubic", "--scale", "2", "--skip-existing")
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout
    assert target.read_bytes() == b"keep me"


def test_quality_real_upscales_video_with_the_real_photo_model(tmp_path):
    # `--quality real` picks the model, never the encoder's --preset (a separate option).
    source = make_clip(tmp_path / "in.mkv", Clip(width=32, height=24, frames=3, audio=False))
    target = tmp_path / "out.mkv"
    result = _cli(source, "-o", target, "--quality", "real", "--preset", "ultrafast")
    assert result.returncode == 0, result.stderr
    assert "real-photo model" in result.stderr
    frames = decoded_frames(target)
    assert len(frames) == 3 and (frames[0].width, frames[0].height) == (128, 96)
