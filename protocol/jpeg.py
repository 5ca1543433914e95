"""JPEG bytes in and out: the one place the fabric encodes, decodes and checks JPEGs."""

from __future__ import annotations

import importlib

import numpy as np

from .errors import ProtocolError

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"


def _cv2():
    # Imported on first use: commands that never touch an image (`camfabric keys`) stay light.
    return importlib.import_module("cv2")


def is_complete_jpeg(data: bytes | memoryview) -> bool:
    """True when `data` starts with SOI and ends with EOI (a whole JPEG, not a truncated one)."""
    n = len(data)
    return n >= 4 and bytes(data[:2]) == SOI and bytes(data[n - 2 : n]) == EOI


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """Encode a BGR or grayscale uint8 image as a baseline JPEG (no EXIF, no thumbnail)."""
    cv2 = _cv2()
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ProtocolError(f"OpenCV could not encode a {image.shape} {image.dtype} image as JPEG")
    return buf.tobytes()


def decode_jpeg(data: bytes | memoryview, grayscale: bool = False) -> np.ndarray:
    """Decode JPEG bytes to a BGR (or grayscale) uint8 array; a corrupt JPEG is a ProtocolError."""
    cv2 = _cv2()
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None:
        raise ProtocolError(f"JPEG of {len(data)} bytes could not be decoded")
    return image


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) read from the first SOFn marker, without decoding the image."""
    view = memoryview(data)
    i, n = 2, len(view)
    while i + 9 < n:
        if view[i] != 0xFF:
            i += 1
            continue
        marker = view[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = (view[i + 2] << 8) | view[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = (view[i + 5] << 8) | view[i + 6]
            width = (view[i + 7] << 8) | view[i + 8]
            return width, height
        i += 2 + length
    raise ProtocolError("no SOF marker found in JPEG")
