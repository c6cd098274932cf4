"""Streamed video upscaling: decode, network and encode overlap, in bounded memory.

Three stages run at once and hand frames on through bounded queues::

    decoder thread ──▶ [queue] ──▶ network (calling thread) ──▶ [queue] ──▶ encoder thread
    demux, decode,                 batches of frames through           RGB → Y'CbCr,
    Y'CbCr → RGB                   the image engine                    encode, mux

so at most :data:`QUEUE_FRAMES` frames wait in each queue whatever the video's length.
Audio and subtitle packets travel the same path untouched and are muxed as they are
(byte-identical). Each frame keeps its own timestamp in the input's time base (variable
frame rate stays variable); colour tags, rotation and sample aspect ratio are copied to
the output stream. The output is written to a temporary file beside the target and moved
into place at the end, so an interrupted or failed run leaves nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lightsr.errors import UsageError, VideoError

try:
    import av
except ImportError:  # pragma: no cover - depends on the installed extras
    raise UsageError("video needs PyAV: pip install 'lightsr[video]'") from None

from lightsr.api import Upscaler
from lightsr.inference import upscale_batch
from lightsr.paths import replaced_atomically
from lightsr.video.color import RGB, ColorTags, frame_to_rgb, rgb_to_frame
from lightsr.video.formats import (
    DEFAULT_CODEC,
    MUXERS,
    check_output_suffix,
    check_pix_fmt,
    choose_pix_fmt,
    encoder_options,
    format_bits,
    get_codec,
    yuv_layout,
)

# Frames each queue holds: enough to keep every stage busy, few enough to bound memory.
QUEUE_FRAMES = 4
# Frames per forward pass by default, per device type (CPU: batching showed no clear gain).
DEFAULT_BATCH = {"cpu": 1, "cuda": 4}
# How often (seconds) a stage blocked on a queue checks whether another stage failed.
_POLL = 0.1

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class VideoOptions:
    """How to encode the output and which part of the input to upscale.

    Attributes:
        codec: ``h264``, ``h265``, ``vp9``, ``av1`` or ``ffv1`` (see
            :data:`lightsr.video.formats.CODECS`).
        crf: constant-quality value (codec's default when ``None``; not for FFV1).
        preset: encoder speed preset (x264/x265 names; VP9 ``cpu-used``; SVT-AV1 0-13).
        pix_fmt: output pixel format; ``None`` keeps the input's sub-sampling and bit
            depth where the codec can hold them.
        start: seconds from the start of the video stream to begin at.
        duration: seconds to upscale from ``start``.
        batch: frames per forward pass (``None``: 1 on the CPU, 4 on CUDA).
    """

    codec: str = DEFAULT_CODEC
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    start: float | None = None
    duration: float | None = None
    batch: int | None = None

    def check(self) -> None:
        """Raise :class:`UsageError` for a value that cannot work, before any work starts."""
        encoder_options(self.codec, self.crf, self.preset)
        check_pix_fmt(self.codec, self.pix_fmt)
        if self.start is not None and self.start < 0:
            raise UsageError(f"--start must be >= 0 seconds, got {self.start}")
        if self.duration is not None and self.duration <= 0:
            raise UsageError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"batch must be a positive number of frames, got {self.batch}")


@dataclass
class VideoReport:
    """What one video run did, and where its time went.

    ``decode_seconds``, ``network_seconds`` and ``encode_seconds`` are the busy time of
    each stage (they overlap, so they add up to more than ``seconds``).
    """

    source: str
    target: str
    frames: int = 0
    input_size: tuple[int, int] = (0, 0)
    output_size: tuple[int, int] = (0, 0)
    codec: str = ""
    pix_fmt: str = ""
    seconds: float = 0.0
    decode_seconds: float = 0.0
    network_seconds: float = 0.0
    encode_seconds: float = 0.0
    copied_packets: int = 0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def outside_network(self) -> float:
        """Share of the stages' busy time spent decoding, converting and encoding."""
        busy = self.decode_seconds + self.network_seconds + self.encode_seconds
        return (self.decode_seconds + self.encode_seconds) / busy if busy > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "frames_per_s": self.frames_per_second,
            "outside_network": self.outside_network,
        }


def upscale_video(
    source: str | os.PathLike,
    target: str | os.PathLike,
    model: Any = None,
    *,
    codec: str = DEFAULT_CODEC,
    crf: int | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
    start: float | None = None,
    duration: float | None = None,
    batch: int | None = None,
    progress: ProgressCallback | None = None,
    **engine: Any,
) -> VideoReport:
    """Super-resolve a video file, keeping its audio, subtitles, timing and colour.

    >>> import lightsr
    >>> lightsr.upscale_video("clip.mp4", "clip_x4.mp4")                   # H.264, x4
    >>> lightsr.upscale_video("clip.mkv", "big.mkv", model="emt", codec="h265", crf=22)

    ``model`` and the keyword arguments in ``engine`` (``scale``, ``weights``, ``tile``,
    ``tile_overlap``, ``max_memory``, ``precision``, ``device``, ``backend``) are those of
    :class:`lightsr.api.Upscaler`; the others are the encoding choices of
    :class:`VideoOptions`. ``progress`` is called as ``progress(frames_done, frames_total)``
    (the total is an estimate from the container, 0 when unknown). To upscale many videos,
    build one :class:`~lightsr.api.Upscaler` and call :func:`transcode`.

    Raises:
        UsageError: bad options, or a codec this PyAV build lacks.
        VideoError: unreadable, damaged or truncated input (saying how many frames were
            upscaled before the damage), or an output that cannot hold the streams.
    """
    options = VideoOptions(codec, crf, preset, pix_fmt, start, duration, batch)
    options.check()
    check_output_suffix(Path(target), codec)
    return transcode(Upscaler(model, **engine), source, target, options, progress)


def transcode(
    upscaler: Upscaler,
    source: str | os.PathLike,
    target: str | os.PathLike,
    options: VideoOptions | None = None,
    progress: ProgressCallback | None = None,
) -> VideoReport:
    """Upscale ``source`` into ``target`` with a loaded ``upscaler`` (see :func:`upscale_video`).

    ``target``'s extension picks the container (``.mp4``, ``.mkv``, ``.mov``, ``.webm``,
    ``.avi``); its folder must exist. An existing ``target`` is replaced only at the end.
    """
    options = options or VideoOptions()
    options.check()
    source, target = Path(source), Path(target)
    check_output_suffix(target, options.codec)
    started = time.perf_counter()
    with _open_input(source) as container:
        reader = _Reader(source, container, options)
        first = reader.first_frame()
        batch = options.batch or DEFAULT_BATCH.get(upscaler.device.type, 1)
        with replaced_atomically(target) as temporary, _open_output(temporary, target) as output:
            height, width = upscaler.output_size(first.height, first.width)
            flexible = upscaler.arbitrary_scale or upscaler.outscale is not None
            flexible = flexible or upscaler.network is None
            writer = _Writer(output, reader, first, (width, height), flexible, options)
            report = VideoReport(
                str(source),
                str(target),
                input_size=(first.width, first.height),
                output_size=(writer.stream.width, writer.stream.height),
                codec=options.codec,
                pix_fmt=writer.stream.pix_fmt,
            )
            size = (writer.stream.height, writer.stream.width) if flexible else None
            _run_stages(reader, writer, upscaler, batch, report, progress, size)
            report.frames = writer.frames
            report.copied_packets = writer.packets
    report.seconds = time.perf_counter() - started
    return report


# ----------------------------------------------------------------------------- containers


def _first_line(exc: BaseException) -> str:
    """FFmpeg's reason without its error number and file name, or the first line of ``exc``."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _open_input(source: Path) -> Iterator[av.container.InputContainer]:
    if not source.is_file():
        raise VideoError(f"{source}: no such file")
    try:
        container = av.open(str(source), "r")
    except av.FFmpegError as exc:
        raise VideoError(
            f"{source}: not a readable video ({_first_line(exc)}); 0 frames upscaled, "
            "no output written"
        ) from None
    try:
        if not container.streams.video:
            raise VideoError(f"{source}: has no video stream")
        yield container
    finally:
        container.close()


@contextlib.contextmanager
def _open_output(temporary: Path, target: Path) -> Iterator[av.container.OutputContainer]:
    muxer = MUXERS[target.suffix.lower()]
    container = av.open(str(temporary), "w", format=muxer)
    try:
        yield container
    finally:
        try:
            container.close()
        except av.FFmpegError as exc:  # the trailer could not be written (disk full)
            raise VideoError(f"{target}: cannot finish writing ({_first_line(exc)})") from None


# ----------------------------------------------------------------------------- stages


@dataclass
class _Frame:
    """A video frame between stages: its timestamp and its RGB pixels."""

    pts: int
    pixels: np.ndarray


_END = object()  # sent down a queue after the last item


class _Stopped(Exception):
    """Raised in a stage blocked on a queue when another stage has failed."""


@dataclass
class _Channel:
    """A bounded queue whose blocking calls give up when ``stop`` is set."""

    stop: threading.Event
    queue: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_FRAMES))

    def put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self) -> Any:
        while True:
            try:
                return self.queue.get(timeout=_POLL)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped from None


class _Stage(threading.Thread):
    """A worker thread that records its exception and stops the other stages."""

    def __init__(self, name: str, work: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=f"lightsr-{name}", daemon=True)
        self.work = work
        self.stop = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the calling thread, which re-raises it
            self.error = exc
            self.stop.set()


def _run_stages(
    reader: _Reader,
    writer: _Writer,
    upscaler: Upscaler,
    batch: int,
    report: VideoReport,
    progress: ProgressCallback | None,
    size: tuple[int, int] | None = None,
) -> None:
    stop = threading.Event()
    decoded, upscaled = _Channel(stop), _Channel(stop)
    stages = [
        _Stage("decoder", lambda: reader.run(decoded, report), stop),
        _Stage("encoder", lambda: writer.run(upscaled, report, progress), stop),
    ]
    for stage in stages:
        stage.start()
    try:
        _infer(decoded, upscaled, upscaler, batch, report, size)
    except _Stopped:
        pass  # another stage failed; its error is raised below
    except BaseException:  # Ctrl-C or a network error: stop the other stages first
        stop.set()
        raise
    finally:
        for stage in stages:
            stage.join()
    for stage in stages:
        if stage.error is not None:
            raise stage.error


def _infer(
    decoded: _Channel,
    upscaled: _Channel,
    upscaler: Upscaler,
    batch: int,
    report: VideoReport,
    size: tuple[int, int] | None = None,
) -> None:
    """The network stage: frames in batches of ``batch``, packets passed on as they come;
    ``size`` (height, width) for upscalers that render any size (see :func:`transcode`)."""
    pending: list[_Frame] = []
    while True:
        item = decoded.get()
        if isinstance(item, _Frame):
            pending.append(item)
            if len(pending) < batch:
                continue
        elif item is not _END:
            upscaled.put(item)
            continue
        if pending:
            started = time.perf_counter()
            outputs = _upscale_frames(upscaler, [frame.pixels for frame in pending], size)
            report.network_seconds += time.perf_counter() - started
            for frame, pixels in zip(pending, outputs, strict=True):
                upscaled.put(_Frame(frame.pts, pixels))
            pending.clear()
        if item is _END:
            upscaled.put(_END)
            return


def _upscale_frames(
    upscaler: Upscaler, frames: list[np.ndarray], size: tuple[int, int] | None = None
) -> list[np.ndarray]:
    if size is not None or upscaler.network is None or len(frames) == 1:
        return [upscaler(frame, size=size) for frame in frames]
    return upscale_batch(
        upscaler.network, frames, upscaler.tile, upscaler.tile_overlap, upscaler.max_memory
    )


# ----------------------------------------------------------------------------- decoding


class _Reader:
    """Demuxes the input, decodes its video stream and yields frames and copied packets.

    Audio and subtitle streams are copied; data and attachment streams are left out. With
    ``start``/``duration`` the video frames and copied packets of that span are kept and
    their timestamps shifted so that the span starts at 0.
    """

    def __init__(self, source: Path, container: av.container.InputContainer, options: VideoOptions):
        self.source = source
        self.container = container
        self.video = container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.copied = [s for s in container.streams if s.type in ("audio", "subtitle")]
        self.whole = options.start is None and options.duration is None
        self.start = options.start or 0.0
        self.end = None if options.duration is None else self.start + options.duration
        self.decoded = 0
        self.tags: ColorTags | None = None
        self.rgb_dtype: np.dtype = np.dtype(np.uint8)
        self._buffered: list[av.VideoFrame | av.Packet] = []
        self._items = self._demux()

    @property
    def expected_frames(self) -> int:
        """Frames the container announces in the span (0 when it does not say)."""
        stream = self.video
        if self.whole and stream.frames:
            return stream.frames
        rate = stream.average_rate or stream.guessed_rate
        total = stream.duration * stream.time_base if stream.duration else None
        if total is None and self.container.duration:
            total = Fraction(self.container.duration, av.time_base)
        if not rate or total is None:
            return 0
        span = min(total, Fraction(self.end)) if self.end is not None else total
        return max(0, round((span - Fraction(self.start)) * rate))

    def first_frame(self) -> av.VideoFrame:
        """The first video frame of the span (packets before it are kept for :meth:`run`)."""
        for item in self._items:
            self._buffered.append(item)
            if isinstance(item, av.VideoFrame):
                return item
        raise VideoError(f"{self.source}: no video frames to upscale")

    def run(self, channel: _Channel, report: VideoReport) -> None:
        """Decoder stage: convert frames to RGB and send them and the packets on."""
        assert self.tags is not None
        items = itertools.chain(self._buffered, self._items)
        self._buffered = []
        while True:
            started = time.perf_counter()
            item = next(items, _END)
            if item is _END:
                break
            if isinstance(item, av.VideoFrame):
                item = _Frame(item.pts, frame_to_rgb(item, self.tags, self.rgb_dtype))
            report.decode_seconds += time.perf_counter() - started
            channel.put(item)
        self._check_complete()
        channel.put(_END)

    def _demux(self) -> Iterator[av.VideoFrame | av.Packet]:
        video, time_base = self.video, self.video.time_base
        origin = video.start_time or 0
        start_pts = origin + round(Fraction(self.start) / time_base)
        end_pts = None if self.end is None else origin + round(Fraction(self.end) / time_base)
        if self.start:
            self.container.seek(start_pts, stream=video)
        shift = start_pts - origin
        previous: int | None = None
        try:
            for packet in self.container.demux(video, *self.copied):
                if packet.stream is not video:
                    if self._in_span(packet):
                        yield self._shifted(packet)
                    continue
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else _next_pts(previous, video)
                    previous = pts
                    if pts < start_pts:
                        continue
                    if end_pts is not None and pts >= end_pts:
                        return
                    self.decoded += 1
                    frame.pts = pts - shift
                    yield frame
        except av.FFmpegError as exc:
            raise self._damaged(_first_line(exc)) from None

    def _in_span(self, packet: av.Packet) -> bool:
        if packet.size == 0:
            return False
        if self.whole or packet.pts is None:
            return self.whole
        seconds = (packet.pts - (packet.stream.start_time or 0)) * packet.time_base
        return self.start <= seconds and (self.end is None or seconds < self.end)

    def _shifted(self, packet: av.Packet) -> av.Packet:
        if self.start:
            shift = round(Fraction(self.start) / packet.time_base)
            packet.pts = None if packet.pts is None else packet.pts - shift
            packet.dts = None if packet.dts is None else packet.dts - shift
        return packet

    def _check_complete(self) -> None:
        # Only a count the container records (MP4, MOV), not an estimate from the duration.
        expected = self.video.frames if self.whole else 0
        if expected and self.decoded < expected:
            raise self._damaged(f"the container announces {expected} frames")

    def _damaged(self, reason: str) -> VideoError:
        return VideoError(
            f"{self.source}: damaged or truncated input: decoding stopped after "
            f"{self.decoded} frames ({reason}); no output written"
        )


def _next_pts(previous: int | None, stream: av.video.stream.VideoStream) -> int:
    """A timestamp for a frame that has none: one frame duration after the previous."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    step = max(1, round(1 / (rate * stream.time_base)))
    return 0 if previous is None else previous + step


# ----------------------------------------------------------------------------- encoding


class _Writer:
    """Sets up the output streams from the input and encodes and muxes what arrives."""

    def __init__(
        self,
        container: av.container.OutputContainer,
        reader: _Reader,
        first: av.VideoFrame,
        size: tuple[int, int],
        flexible: bool,
        options: VideoOptions,
    ) -> None:
        """``size``: the output (width, height); ``flexible``: the upscaler renders any
        size, so a side the pixel format cannot take is rounded to one it can."""
        self.container = container
        source = reader.video
        self.pix_fmt = choose_pix_fmt(options.codec, first.format, options.pix_fmt)
        self.tags = ColorTags.of(first)
        out_bits = format_bits(av.VideoFormat(self.pix_fmt))
        deep = max(format_bits(first.format), out_bits) > 8
        reader.tags, reader.rgb_dtype = self.tags, np.dtype(np.uint16 if deep else np.uint8)
        width, height = size
        if flexible:
            width, height = self._fitting_size(width, height)
        self._check_size(width, height)
        self.stream = self._add_video(source, first, width, height, options)
        self.copies = {stream.index: self._add_copy(stream) for stream in reader.copied}
        self.expected = reader.expected_frames
        self.frames = 0
        self.packets = 0

    def _fitting_size(self, width: int, height: int) -> tuple[int, int]:
        """The nearest size the pixel format stores (even sides for 4:2:0 and 4:2:2)."""
        layout = yuv_layout(av.VideoFormat(self.pix_fmt))
        if layout is None:
            return width, height
        step_x, step_y = 1 << layout.shift_x, 1 << layout.shift_y
        return (
            max(step_x, round(width / step_x) * step_x),
            max(step_y, round(height / step_y) * step_y),
        )

    def _check_size(self, width: int, height: int) -> None:
        layout = yuv_layout(av.VideoFormat(self.pix_fmt))
        if layout and (width % (1 << layout.shift_x) or height % (1 << layout.shift_y)):
            raise VideoError(
                f"{self.pix_fmt} needs even sides, but the output is {width}x{height}; "
                "use --pix-fmt yuv444p or another scale"
            )

    def _add_video(self, source, first, width: int, height: int, options: VideoOptions):
        stream = self.container.add_stream(
            get_codec(options.codec).encoder, rate=source.average_rate or source.guessed_rate
        )
        stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
        stream.time_base = source.time_base
        context = stream.codec_context
        context.time_base = source.time_base
        yuv = yuv_layout(av.VideoFormat(self.pix_fmt)) is not None
        context.colorspace = self.tags.matrix if yuv else RGB
        context.color_range = self.tags.range if yuv else 2
        context.color_primaries = self.tags.primaries
        context.color_trc = self.tags.transfer
        if source.sample_aspect_ratio:
            context.sample_aspect_ratio = source.sample_aspect_ratio
        context.options = encoder_options(options.codec, options.crf, options.preset)
        if first.rotation:
            stream.set_display_rotation(first.rotation)
        return stream

    def _add_copy(self, stream: av.stream.Stream) -> av.stream.Stream:
        if stream.codec_context.name not in self.container.supported_codecs:
            raise VideoError(
                f"a {Path(self.container.name).suffix or self.container.format.name} file "
                f"cannot hold the input's {stream.type} stream ({stream.codec_context.name}); "
                "write .mkv instead"
            )
        return self.container.add_stream_from_template(stream)

    def run(
        self, channel: _Channel, report: VideoReport, progress: ProgressCallback | None
    ) -> None:
        """Encoder stage: encode frames and mux them with the copied packets."""
        try:
            self._run(channel, report, progress)
        except av.FFmpegError as exc:
            raise VideoError(
                f"encoding failed after {self.frames} frames ({_first_line(exc)}); "
                "no output written"
            ) from None

    def _run(
        self, channel: _Channel, report: VideoReport, progress: ProgressCallback | None
    ) -> None:
        while (item := channel.get()) is not _END:
            started = time.perf_counter()
            if isinstance(item, _Frame):
                self._encode(item)
                self.frames += 1
            else:
                item.stream = self.copies[item.stream.index]
                self.container.mux(item)
                self.packets += 1
            report.encode_seconds += time.perf_counter() - started
            if progress is not None and isinstance(item, _Frame):
                progress(self.frames, max(self.expected, self.frames))
        started = time.perf_counter()
        self.container.mux(self.stream.encode(None))
        report.encode_seconds += time.perf_counter() - started

    def _encode(self, item: _Frame) -> None:
        frame = rgb_to_frame(item.pixels, self.pix_fmt, self.tags)
        frame.pts = item.pts
        frame.time_base = self.stream.codec_context.time_base
        self.container.mux(self.stream.encode(frame))
