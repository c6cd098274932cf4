"""Video containers, codecs and pixel formats: what lightsr writes and how it chooses.

Standard library only (PyAV is imported inside the functions that need it), so the CLI can
plan video jobs without loading FFmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lightsr.errors import UsageError

if TYPE_CHECKING:
    import av

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".gif")
# FFmpeg muxer of each output extension (a temporary file has no telling extension).
MUXERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm", ".avi": "avi"}
# Output extension for a folder run when the input's container cannot hold the codec.
FALLBACK_SUFFIX = ".mkv"
# The sub-sampling part of planar Y'CbCr format names, by (log2 chroma shift x, y).
_SUBSAMPLING = {(1, 1): "420", (1, 0): "422", (0, 0): "444", (0, 1): "440"}


@dataclass(frozen=True)
class Codec:
    """An output codec choice of ``--codec``.

    Attributes:
        encoder: FFmpeg encoder name.
        crf: default constant-quality value (``None``: lossless, no ``--crf``).
        crf_range: valid ``--crf`` values, inclusive.
        preset: default speed preset, or ``None`` when the encoder has none.
        preset_option: the encoder option that ``--preset`` sets.
        options: fixed encoder options.
        containers: output extensions whose container can hold this codec.
    """

    encoder: str
    crf: int | None
    crf_range: tuple[int, int] = (0, 0)
    preset: str | None = None
    preset_option: str = "preset"
    options: dict[str, str] = field(default_factory=dict)
    containers: tuple[str, ...] = (".mp4", ".mkv", ".mov")


CODECS = {
    # x264 "faster", not FFmpeg's "medium": at 1280x720 medium costs about as much CPU as the
    # default network on two cores, and faster saves a third of it for a file 3 % larger at
    # the same CRF (docs/video.md).
    "h264": Codec("libx264", 18, (0, 51), "faster", containers=(".mp4", ".mkv", ".mov", ".avi")),
    "h265": Codec("libx265", 20, (0, 51), "medium", options={"x265-params": "log-level=error"}),
    # b=0 makes --crf a constant-quality target instead of a cap on the default bit rate.
    "vp9": Codec(
        "libvpx-vp9",
        31,
        (0, 63),
        "4",
        "cpu-used",
        {"b": "0", "row-mt": "1"},
        (".webm", ".mp4", ".mkv", ".mov", ".avi"),
    ),
    "av1": Codec("libsvtav1", 30, (1, 63), "8", containers=(".webm", ".mp4", ".mkv", ".mov")),
    "ffv1": Codec("ffv1", None, options={"level": "3"}, containers=(".mkv", ".avi")),
}
DEFAULT_CODEC = "h264"


def get_codec(name: str) -> Codec:
    """The :class:`Codec` called ``name``.

    Raises:
        UsageError: unknown name.
    """
    try:
        return CODECS[name]
    except KeyError:
        raise UsageError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}") from None


def is_video(path: str | Path) -> bool:
    """Whether ``path`` has a video extension lightsr reads."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def output_suffix(source: Path, codec: str) -> str:
    """Extension of the output of ``source`` in a folder run: the input's own when its
    container can hold ``codec`` (a GIF becomes an MP4), else ``.mkv``."""
    suffix = ".mp4" if source.suffix.lower() == ".gif" else source.suffix.lower()
    return suffix if suffix in get_codec(codec).containers else FALLBACK_SUFFIX


def check_output_suffix(target: Path, codec: str) -> None:
    """Raise :class:`UsageError` unless ``target``'s container can hold ``codec``."""
    suffix = target.suffix.lower()
    if suffix not in MUXERS:
        raise UsageError(
            f"{target}: cannot write video as {suffix or 'no extension'!r}; "
            f"use one of: {', '.join(MUXERS)}"
        )
    if suffix not in get_codec(codec).containers:
        raise UsageError(
            f"{target}: a {suffix} file cannot hold {codec}; use one of: "
            f"{', '.join(get_codec(codec).containers)}"
        )


def encoder_options(codec: str, crf: int | None, preset: str | None) -> dict[str, str]:
    """FFmpeg options of ``codec``'s encoder for ``--crf`` and ``--preset`` (``None``: default).

    Raises:
        UsageError: a lossless codec given a quality or preset, or ``crf`` out of range.
    """
    choice = get_codec(codec)
    options = dict(choice.options)
    if choice.crf is None:
        if crf is not None or preset is not None:
            raise UsageError(f"{codec} is lossless: --crf and --preset do not apply")
        return options
    low, high = choice.crf_range
    crf = choice.crf if crf is None else crf
    if not low <= crf <= high:
        raise UsageError(f"--crf for {codec} must be between {low} and {high}, got {crf}")
    options["crf"] = str(crf)
    options[choice.preset_option] = preset or choice.preset or ""
    return options


def check_encoder(codec: str) -> av.Codec:
    """The FFmpeg encoder of ``codec``, with a one-line error when PyAV's build lacks it."""
    import av

    encoder = get_codec(codec).encoder
    try:
        return av.Codec(encoder, "w")
    except (ValueError, av.FFmpegError):
        available = ", ".join(name for name in CODECS if _has_encoder(CODECS[name].encoder))
        raise UsageError(
            f"this PyAV build has no {encoder} encoder for --codec {codec}; "
            f"available: {available or 'none'}"
        ) from None


def _has_encoder(name: str) -> bool:
    import av

    return name in av.codecs_available


@dataclass(frozen=True)
class YuvLayout:
    """A planar Y'CbCr pixel format: ``name``, sample ``bits``, log2 chroma shifts."""

    name: str
    bits: int
    shift_x: int
    shift_y: int

    @property
    def dtype_size(self) -> int:
        return 1 if self.bits <= 8 else 2


def yuv_layout(fmt: av.VideoFormat) -> YuvLayout | None:
    """The planar little-endian layout with ``fmt``'s depth and sub-sampling.

    ``None`` for RGB, palette, grey and other formats that are not three-plane Y'CbCr, or
    whose sub-sampling has no planar counterpart here (4:1:1 and 4:1:0). ``yuvj*``
    formats map to ``yuv*``: their full range is a separate colour property.
    """
    import av

    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer or len(fmt.components) < 3:
        return None
    if fmt.name.startswith("xyz"):  # CIE XYZ (digital cinema), not Y'CbCr
        return None
    probe = 64
    shifts = (
        (probe // fmt.chroma_width(probe)).bit_length() - 1,
        (probe // fmt.chroma_height(probe)).bit_length() - 1,
    )
    if shifts not in _SUBSAMPLING:
        return None
    bits = fmt.components[0].bits
    name = f"yuv{_SUBSAMPLING[shifts]}p" + ("" if bits <= 8 else f"{bits}le")
    try:
        av.VideoFormat(name)
    except ValueError:
        return None
    return YuvLayout(name, bits, *shifts)


def check_pix_fmt(codec: str, pix_fmt: str | None) -> list[str]:
    """The pixel formats ``codec``'s encoder takes; ``pix_fmt``, if given, must be one.

    Raises:
        UsageError: the encoder is missing or does not take ``pix_fmt``.
    """
    supported = [f.name for f in check_encoder(codec).video_formats or ()]
    if pix_fmt is not None and pix_fmt not in supported:
        raise UsageError(
            f"{codec} cannot encode pixel format {pix_fmt!r}; choose one of: {', '.join(supported)}"
        )
    return supported


def format_bits(fmt: av.VideoFormat) -> int:
    """Bits per sample of ``fmt`` (8 for palette formats)."""
    return 8 if fmt.has_palette else max(c.bits for c in fmt.components)


def choose_pix_fmt(codec: str, source: av.VideoFormat, requested: str | None = None) -> str:
    """The output pixel format: ``requested`` if the encoder takes it, else the closest to
    ``source`` that it takes.

    Y'CbCr input keeps its sub-sampling and depth where possible, then falls back to 4:2:0
    (then 8 bits). RGB and palette input become 4:2:0 (the format players expect), except
    for FFV1, which keeps them as RGB.

    Raises:
        UsageError: ``requested`` is not a pixel format ``codec``'s encoder accepts.
    """
    supported = check_pix_fmt(codec, requested)
    if requested is not None:
        return requested
    bits = format_bits(source)
    layout = yuv_layout(source)
    wanted = []
    if layout is None and codec == "ffv1":
        wanted = ["bgr0"] if bits <= 8 else [f"gbrp{bits}le", "gbrp16le"]
    sub = "420" if layout is None else _SUBSAMPLING[(layout.shift_x, layout.shift_y)]
    depths = [bits, 10, 8] if bits > 10 else [bits, 8] if bits > 8 else [8]
    for depth in depths:
        suffix = "" if depth == 8 else f"{depth}le"
        wanted += [f"yuv{sub}p{suffix}", f"yuv420p{suffix}"]
    return next(name for name in [*wanted, "yuv420p"] if name in supported)
