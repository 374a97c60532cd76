"""Image size checks before decoding: a few header bytes can declare an image that would
take gigabytes to decode (a decompression bomb), so sizes are read from the header first;
and reading an image file that way (``read_image_file``)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from fer_pipeline.errors import SourceError


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def frame_refusal(data: bytes, max_pixels: int) -> str | None:
    """Why a frame from the wire must not be decoded (None: it may be): not a known image,
    or a header declaring more than ``max_pixels``. The display dead-letters with this
    reason; the dashboard skips the frame."""
    dims = image_dimensions(data)
    if dims is None:
        return "frame is not a JPEG, PNG or BMP image"
    if dims[0] * dims[1] > max_pixels:
        return f"frame of {dims[0]}x{dims[1]} exceeds max_frame_pixels={max_pixels}"
    return None


def read_image_file(path: Path, max_pixels: int) -> np.ndarray:
    """An image file as BGR, its size checked from the header before decoding, and again after
    (a header this module does not read).

    Raises:
        SourceError: why it cannot be used (unreadable, over ``max_pixels``, not an image
            OpenCV decodes), without the path: an image folder skips it, ``analyze`` refuses.
    """
    import cv2

    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceError(f"cannot read it ({e.strerror})") from e
    dims = image_dimensions(data)
    if dims is not None and dims[0] * dims[1] > max_pixels:
        raise SourceError(f"{dims[0]}x{dims[1]} exceeds max_image_pixels={max_pixels}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError("cannot decode it: not an image OpenCV reads")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise SourceError(f"{image.shape[1]}x{image.shape[0]} exceeds max_image_pixels={max_pixels}")
    return image
