"""JPEG bytes in and out: the one place the fabric encodes, decodes and checks JPEGs."""

from __future__ import annotations

import numpy as np

from ..runtime.optional import require
from .errors import LimitError, ProtocolError

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
MAX_DIMENSION = 16384
# 2**25 pixels holds 8K UHD (7680x4320); a decoded BGR image stays under 100 MiB.
MAX_PIXELS = 1 << 25
MAX_SEGMENTS = 256


def _cv2():
    # Imported on first use: commands that never touch an image (`camfabric keys`) stay light,
    # and robot code receiving raw frames needs no OpenCV at all.
    return require("cv2", "encoding or decoding JPEG")


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
    """Decode JPEG bytes to a BGR (or grayscale) uint8 array; a corrupt JPEG is a ProtocolError.

    The JPEG's own SOF dimensions are read first: one declaring more than `MAX_PIXELS` pixels
    (a "JPEG bomb": a few KB that would decode into gigabytes) is a LimitError, and nothing
    is allocated for it.
    """
    width, height = jpeg_size(data)
    if width * height > MAX_PIXELS:
        raise LimitError(f"JPEG declares {width}x{height} pixels, over the cap of {MAX_PIXELS}")
    cv2 = _cv2()
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None:
        raise ProtocolError(f"JPEG of {len(data)} bytes could not be decoded")
    return image


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) read from the first SOFn marker, without decoding the image.

    Walks the marker segments by their declared lengths (ITU-T T.81, B.1.1.2: a marker is
    0xFF plus a code, optionally preceded by 0xFF fill bytes), so the cost is a few steps per
    segment, never a byte-by-byte scan of a large payload; anything else where a marker must
    be, or a scan before any SOF, is a ProtocolError.
    """
    view = memoryview(data)
    n = len(view)
    if n < 4 or view[0] != 0xFF or view[1] != 0xD8:
        raise ProtocolError("JPEG does not start with FFD8")
    i = 2
    for _ in range(MAX_SEGMENTS):
        while i + 1 < n and view[i] == 0xFF and view[i + 1] == 0xFF:
            i += 1  # fill bytes before a marker
        if i + 4 > n or view[i] != 0xFF:
            raise ProtocolError(f"no JPEG marker at offset {i}")
        marker = view[i + 1]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2  # a marker without a length
            continue
        if marker in (0xD9, 0xDA):
            raise ProtocolError("JPEG reaches its scan with no SOF marker")
        length = (view[i + 2] << 8) | view[i + 3]
        if length < 2:
            raise ProtocolError(f"JPEG segment at offset {i} declares length {length}")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                raise ProtocolError("JPEG ends inside its SOF marker")
            height = (view[i + 5] << 8) | view[i + 6]
            width = (view[i + 7] << 8) | view[i + 8]
            return width, height
        i += 2 + length
    raise ProtocolError(f"no SOF marker in the first {MAX_SEGMENTS} JPEG segments")
