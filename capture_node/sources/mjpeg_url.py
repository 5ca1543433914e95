"""A camera someone else already serves as MJPEG over HTTP (µStreamer, mjpg-streamer, IP cameras).

    [node.cameras.source]
    kind = "mjpeg_url"
    url = "http://127.0.0.1:8080/stream"        # user:password@ in the URL becomes Basic auth

The response must be `multipart/x-mixed-replace`. Parts are found by their delimiter lines
(any line starting with `--`: servers disagree on how the declared boundary is quoted and
dashed, and the JPEG is never searched for it). A part with `Content-Length` is read by its
length and checked; a part without one — or after a server lied about a length once — is cut
by SOI/EOI scanning (`JpegSplitter`). Frames pass through undecoded; a background reader
keeps the newest one. Connect and read timeouts apply to every socket operation; a stream
that ends, stalls or answers anything but 200 multipart is a SourceError, and the capture
loop reconnects with backoff. Credentials in the URL are sent, never logged.
"""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ...protocol.wire import MAX_PAYLOAD
from ...runtime.config import bounded
from ...runtime.errors import ConfigError
from ..errors import SourceError
from ..source import Capture, ProbeReport, Source
from .jpeg_stream import FrameSlot, JpegSplitter, StreamReader, check_jpeg, frame_size, read_chunks

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024  # one part's header block
MAX_PREAMBLE_BYTES = 64 * 1024  # bytes tolerated before a part delimiter shows up


@dataclass(frozen=True, slots=True)
class Options:
    """The `[node.cameras.source]` table of an MJPEG-over-HTTP camera (besides `kind`)."""

    url: str
    connect_timeout_s: float = bounded(3.0, 0.05, 60.0)
    read_timeout_s: float = bounded(5.0, 0.1, 120.0)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError("url", f"must be an http:// or https:// URL, got {redact(self.url)!r}")
        if not parts.hostname:
            raise ConfigError("url", f"has no host: {redact(self.url)!r}")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError as exc:
            raise ConfigError("url", f"bad port in {redact(self.url)!r}") from exc


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for logs and the registry."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class MultipartJpegParser:
    """Feed the body of a multipart/x-mixed-replace response; get back its whole JPEGs."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "delimiter"   # delimiter → headers → (length | scan) → delimiter
        self._length = 0
        self._splitter: JpegSplitter | None = None
        self.trust_length = True
        self.parts = 0
        self.bad_parts = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while self._step(frames):
            pass
        return frames

    def _step(self, frames: list[bytes]) -> bool:
        """One state transition; False when more bytes are needed."""
        buf = self._buf
        if self._state == "delimiter":
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_PREAMBLE_BYTES:
                    raise SourceError(f"no multipart delimiter line in {len(buf)} bytes")
                return False
            line = bytes(buf[:end]).strip()
            del buf[: end + 1]
            if line.startswith(b"--"):
                self._state = "headers"
            return True
        if self._state == "headers":
            end, gap = buf.find(b"\r\n\r\n"), 4
            bare = buf.find(b"\n\n")
            if bare >= 0 and (end < 0 or bare < end):
                end, gap = bare, 2
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise SourceError(f"part header block longer than {MAX_HEADER_BYTES} bytes")
                return False
            length = _content_length(bytes(buf[:end]))
            del buf[: end + gap]
            self.parts += 1
            if length is not None and self.trust_length:
                if length > MAX_PAYLOAD:
                    raise SourceError(f"part of {length} bytes is beyond the {MAX_PAYLOAD}-byte limit")
                self._state, self._length = "length", length
            else:
                self._state, self._splitter = "scan", JpegSplitter()
            return True
        if self._state == "length":
            if len(buf) < self._length:
                return False
            body = bytes(buf[: self._length])
            del buf[: self._length]
            if check_jpeg(body):
                frames.append(body)
                self._state = "delimiter"
                return True
            # The length was wrong (or the part is not a JPEG): from now on cut by markers.
            self.bad_parts += 1
            if self.trust_length:
                log.warning("a part's Content-Length (%d) does not frame a whole JPEG; "
                            "cutting frames by JPEG markers from now on", self._length)
            self.trust_length = False
            self._splitter = JpegSplitter()
            self._splitter.push(body)
            self._state = "scan"
            return True
        # scan: whole JPEG by markers, then whatever follows is the next delimiter
        assert self._splitter is not None
        self._splitter.push(bytes(buf))
        buf.clear()
        frame = self._splitter.next_frame()
        if frame is None:
            if self._splitter.buffered > MAX_PAYLOAD:
                raise SourceError("part without a JPEG end beyond the payload limit")
            return False
        frames.append(frame)
        buf += self._splitter.rest()
        self._splitter = None
        self._state = "delimiter"
        return True


def _content_length(block: bytes) -> int | None:
    for line in block.splitlines():
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
            return length if length > 0 else None
    return None


class MjpegUrlSource(Source):
    """JPEGs from an MJPEG HTTP stream, passed through as they arrive."""

    kind = "mjpeg_url"

    def __init__(self, options: Options) -> None:
        self.options = options
        parts = urlsplit(options.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Accept": "multipart/x-mixed-replace, */*", "User-Agent": "camfabric",
                         **options.headers}
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._sock: socket.socket | None = None
        self._reader: StreamReader | None = None
        self._slot = FrameSlot()
        self._lock = threading.Lock()
        self.parser = MultipartJpegParser()

    @property
    def device(self) -> str:
        return redact(self.options.url)

    def open(self) -> None:
        self.close()
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.options.connect_timeout_s)
        try:
            conn.request("GET", self._target, headers=self._headers)
            # http.client drops conn.sock once the response owns a body read until close; keep
            # it, to set the read timeout and to shut it down from another thread.
            sock = conn.sock
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise SourceError(f"{self.device}: {_describe(exc)}") from exc
        content_type = response.getheader("Content-Type", "")
        if response.status != 200:
            conn.close()
            raise SourceError(f"{self.device}: HTTP {response.status} {response.reason}")
        if not content_type.lower().startswith("multipart/x-mixed-replace"):
            conn.close()
            raise SourceError(f"{self.device}: not an MJPEG stream (Content-Type {content_type!r})")
        if sock is not None:
            sock.settimeout(self.options.read_timeout_s)
        self._conn, self._sock, self._response = conn, sock, response
        self.parser = MultipartJpegParser()
        self._slot = FrameSlot()
        self._reader = StreamReader(f"mjpeg {self.device}", self._frames, self._shutdown, self._slot).start()

    def read(self, timeout: float) -> Capture:
        jpeg, t_capture_ns = self._slot.take(timeout, self.device)
        w, h = frame_size(jpeg)
        return Capture(t_capture_ns=t_capture_ns, w=w, h=h, jpeg=jpeg)

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stop()  # shuts the socket down, then joins the reader
        self._shutdown()
        with self._lock:
            conn, self._conn = self._conn, None
            response, self._response = self._response, None
        if response is not None:
            response.close()
        if conn is not None:
            conn.close()

    def interrupt(self) -> None:
        self._slot.interrupt()

    def probe(self) -> ProbeReport:
        start = time.monotonic()
        try:
            self.open()
            first = self.read(timeout=max(5.0, self.options.read_timeout_s))
            return ProbeReport(opened=True, device=self.device, formats=["MJPG"],
                               resolutions=[(first.w, first.h)],
                               first_frame_ms=(time.monotonic() - start) * 1000)
        except SourceError as exc:
            return ProbeReport(opened=False, device=self.device, formats=["MJPG"], error=str(exc))
        finally:
            self.close()

    def _frames(self) -> Iterator[bytes]:
        response = self._response
        if response is None:
            return
        for chunk in read_chunks(response.read1, timeout_s=self.options.read_timeout_s,
                                 ended="stream ended (connection closed by the server)", describe=_describe):
            yield from self.parser.feed(chunk)

    def _shutdown(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv
            except OSError:
                pass  # already disconnected


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def create(options: Options, camera: object) -> MjpegUrlSource:
    """An MJPEG URL source (the stream's own resolution and rate; the camera's are not imposed)."""
    return MjpegUrlSource(options)
