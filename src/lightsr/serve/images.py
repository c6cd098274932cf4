"""Image sizes read from file headers, so that oversized uploads are refused before decoding.

A few hundred bytes of a PNG can declare 20000×20000 pixels; decoding it would allocate
1.2 GB and upscaling it far more. The width and height are read from the header of each
format that :func:`lightsr.io.decode_image` accepts by :mod:`lightsr.imageinfo`, without
decoding anything.
"""

from __future__ import annotations

from lightsr.errors import ImageError
from lightsr.imageinfo import image_info


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, WebP, BMP or TIFF header.

    Returns:
        ``None`` when ``data`` is not one of these formats or its header is cut short or
        malformed.
    """
    try:
        info = image_info(data)
    except ImageError:
        return None
    return info.width, info.height
