"""Hostile files, generated: decompression bombs, truncated images, bad checkpoints.

Nothing here is stored in the repository; each test writes what it needs into its
temporary folder.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lightsr.archs import build_model
from lightsr.io import encode_image

FORMATS = ("png", "jpg", "webp", "tif", "bmp")


def photo(height: int = 40, width: int = 56, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 image (colour gradients plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4, y * 5, (x + y) * 2, 255 - x][:channels], axis=-1) % 256
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(path: Path, side: int) -> Path:
    """A complete, valid black RGB PNG of ``side`` x ``side`` pixels (20000: 1.2 MB on disk,
    1.2 GB decoded).

    The deflate stream repeats one independently compressed block of rows (each ends with
    a full flush, so a copy never refers to the one before), which is fast to build.
    """
    rows_per_block = 100
    row = bytes(1 + 3 * side)  # filter byte 0, then black pixels
    block_data = row * rows_per_block
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(block_data) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(side, rows_per_block)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(row * rest) + tail.flush()
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(block_data, adler)
    adler = zlib.adler32(row * rest, adler)
    stream = b"\x78\xda" + block * blocks + last + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", stream)
        + _png_chunk(b"IEND", b"")
    )
    return path


def header_bomb(path: Path, image_format: str, width: int, height: int) -> Path:
    """A small file of ``image_format`` whose header declares ``width`` x ``height``: a
    real image's file with its size fields rewritten."""
    data = bytearray(encode_image(photo(), f".{image_format}").tobytes())
    if image_format == "png":
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif image_format == "jpg":
        offset = 2
        while data[offset + 1] not in (0xC0, 0xC1, 0xC2):
            offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        data[offset + 5 : offset + 9] = struct.pack(">HH", height, width)
    elif image_format == "webp":  # an extended (VP8X) header before the image data
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + canvas
        data[12:12] = vp8x
        data[4:8] = struct.pack("<I", len(data) - 8)
    elif image_format == "tif":
        data = bytearray(_tiff_header(width, height))
    elif image_format == "bmp":
        data[18:26] = struct.pack("<ii", width, height)
    path.write_bytes(bytes(data))
    return path


def _tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose first directory declares an RGB image of the size."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 3)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(64)


def truncated(path: Path, image_format: str, fraction: float) -> Path:
    """A real image of ``image_format`` cut to ``fraction`` of its bytes."""
    data = encode_image(photo(), f".{image_format}").tobytes()
    path.write_bytes(data[: max(int(len(data) * fraction), 1)])
    return path


# ----------------------------------------------------------------------------- checkpoints


def state_dict(variant: str = "fmen_s", scale: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(variant, scale).state_dict()


def bad_checkpoint(path: Path, kind: str) -> Path:
    """A checkpoint of FMEN-S x4 spoiled in one way (``kind``; ``"valid"``: not spoiled)."""
    weights = state_dict()
    first = next(iter(weights))
    if kind == "int8":
        weights = {k: v.to(torch.int8) if v.is_floating_point() else v for k, v in weights.items()}
    elif kind == "complex":
        weights[first] = weights[first].to(torch.complex64)
    elif kind == "nan":
        weights[first] = torch.full_like(weights[first], float("nan"))
    elif kind == "shape":
        weights[first] = weights[first][:, :, :1]
    elif kind == "scalar":
        weights[first] = torch.zeros(())
    torch.save({"params": weights}, path)
    return path


class _RunsCode:
    """Unpickling this calls ``os.system`` (a pickle that would run code)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def code_pickle(path: Path, marker: Path, protocol: int | None) -> Path:
    """A plain-pickle .pth whose unpickling would create ``marker`` with a shell command."""
    with open(path, "wb") as file:
        payload = {"params": {"head.weight": _RunsCode(f"touch {marker}")}}
        pickle.dump(payload, file, protocol=protocol)
    return path


def torch_code_pickle(path: Path, marker: Path, protocol: None = None) -> Path:
    """The same, saved by ``torch.save`` (zip container)."""
    torch.save({"params": _RunsCode(f"touch {marker}")}, path)
    return path
