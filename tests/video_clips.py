"""Real test clips written with PyAV: a moving texture, a sine tone, optional subtitles."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 48000
TONE_HZ = 440.0


@dataclass(frozen=True)
class Clip:
    """How to write a test clip (see :func:`make_clip`)."""

    width: int = 64
    height: int = 48
    frames: int = 8
    rate: int = 24
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    vfr: bool = False
    rotation: int = 0
    audio: bool = True
    subtitles: bool = False
    matrix: int = 1  # BT.709
    full_range: bool = False
    faststart: bool = False
    flat: tuple[int, int, int] | None = None  # a flat Y'CbCr frame (8-bit codes)


def texture(width: int, height: int, index: int) -> np.ndarray:
    """An RGB uint8 pattern that moves with ``index``: stripes, rings and a colour ramp."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = 0.7 * index
    red = 0.5 + 0.4 * np.sin(x / 3.0 + phase)
    green = 0.5 + 0.4 * np.cos(np.hypot(x - width / 2, y - height / 2) / 2.5 - phase)
    blue = (x + y + 4 * index) / (width + height + 4 * index)
    return np.rint(np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def frame_times(clip: Clip) -> list[Fraction]:
    """Presentation time of each frame: regular, or irregular gaps for VFR."""
    if not clip.vfr:
        return [Fraction(i, clip.rate) for i in range(clip.frames)]
    gaps = [1, 3, 1, 2, 5, 1, 1, 4]
    times, now = [], Fraction(0)
    for i in range(clip.frames):
        times.append(now)
        now += Fraction(gaps[i % len(gaps)], clip.rate * 2)
    return times


def _video_frame(clip: Clip, index: int) -> av.VideoFrame:
    if clip.flat is not None:
        frame = av.VideoFrame(clip.width, clip.height, clip.pix_fmt)
        depth = 2 if "10" in clip.pix_fmt else 1
        for plane, code in zip(frame.planes, clip.flat, strict=True):
            dtype = np.uint8 if depth == 1 else np.dtype("<u2")
            np.frombuffer(plane, dtype)[:] = code << (2 if depth == 2 else 0)
        return frame
    rgb = av.VideoFrame.from_ndarray(texture(clip.width, clip.height, index), format="rgb24")
    return rgb.reformat(
        format=clip.pix_fmt,
        dst_colorspace=clip.matrix,
        dst_color_range=2 if clip.full_range else 1,
    )


def make_clip(path: Path, clip: Clip) -> Path:
    """Write ``clip`` to ``path`` (container from the extension) and return ``path``."""
    options = {"movflags": "faststart"} if clip.faststart else {}
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream(clip.codec, rate=clip.rate)
        video.width, video.height, video.pix_fmt = clip.width, clip.height, clip.pix_fmt
        time_base = Fraction(1, clip.rate * 2 * 10)
        video.time_base = video.codec_context.time_base = time_base
        context = video.codec_context
        context.colorspace = clip.matrix
        context.color_range = 2 if clip.full_range else 1
        context.color_primaries = 1
        context.color_trc = 1
        if clip.codec == "libx264":
            context.options = {"crf": "20", "preset": "veryfast"}
        if clip.rotation:
            video.set_display_rotation(clip.rotation)
        audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if clip.audio else None
        subtitles = out.add_mux_stream("subrip") if clip.subtitles else None
        times = frame_times(clip)
        for index, when in enumerate(times):
            frame = _video_frame(clip, index)
            frame.pts = int(when / time_base)
            frame.time_base = time_base
            frame.colorspace = clip.matrix
            frame.color_range = 2 if clip.full_range else 1
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        length = times[-1] + Fraction(1, clip.rate)
        if audio is not None:
            _write_tone(out, audio, length)
        if subtitles is not None:
            _write_subtitles(out, subtitles, length)
    return path


def _write_tone(out: av.container.OutputContainer, stream, length: Fraction) -> None:
    count = int(length * SAMPLE_RATE)
    t = np.arange(count) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None]
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate, frame.pts = SAMPLE_RATE, 0
    out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _write_subtitles(out: av.container.OutputContainer, stream, length: Fraction) -> None:
    stream.time_base = Fraction(1, 1000)
    half = int(length * 500)
    for index, text in enumerate((b"first line", b"second line")):
        packet = av.Packet(text)
        packet.stream = stream
        packet.pts = packet.dts = index * half
        packet.duration = half
        packet.time_base = stream.time_base
        out.mux(packet)


def packets(path: Path, kind: str) -> list[tuple[int | None, bytes]]:
    """(pts, payload) of every packet of the first ``kind`` stream."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [
            (float(p.pts * p.time_base) if p.pts is not None else None, bytes(p))
            for p in container.demux(stream)
            if p.size
        ]


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    """Every decoded frame of the video stream (kept in memory: clips are tiny)."""
    with av.open(str(path)) as container:
        return list(container.decode(video=0))
