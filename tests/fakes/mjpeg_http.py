"""A fake MJPEG HTTP camera (µStreamer, mjpg-streamer, an IP camera) on 127.0.0.1.

It answers GET with `multipart/x-mixed-replace` and streams whole JPEGs as parts, in one of
the boundary styles seen in the field, with or without a per-part Content-Length, optionally
with chunked transfer encoding. On command it cuts a part short and drops the connection, or
sends one part whose Content-Length lies.

    with MjpegHttpServer(numbered_jpegs(10), style="ustreamer", content_length=False) as server:
        server.url     # http://127.0.0.1:PORT/stream
        server.drop_mid_frame()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# style → (Content-Type boundary parameter, delimiter line written before each part)
STYLES = {
    "standard": ("boundary=frame", b"--frame"),
    "ustreamer": ("boundary=boundarydonotcross", b"--boundarydonotcross"),
    "quoted": ('boundary="my boundary"', b"--my boundary"),
    # Seen on IP cameras: dashes in the declared boundary, and the body uses it as declared.
    "dashed": ("boundary=--myboundary", b"--myboundary"),
}


class MjpegHttpServer:
    """Streams `jpegs` in a loop to every client of `path`, at `fps`."""

    def __init__(self, jpegs: Sequence[bytes], *, style: str = "standard", content_length: bool = True,
                 chunked: bool = False, fps: float = 100.0, path: str = "/stream",
                 status: int = 200, content_type: str | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.jpegs = list(jpegs)
        self.style = style
        self.content_length = content_length
        self.chunked = chunked
        self.fps = fps
        self.path = path
        self.status = status
        self.content_type = content_type or f"multipart/x-mixed-replace;{STYLES[style][0]}"
        self.credentials = (username, password) if username else None
        self.sent: list[int] = []
        self.connections = 0
        self.requests: list[dict[str, str]] = []
        self._faults: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-mjpeg-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> MjpegHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(2.0)

    def __enter__(self) -> MjpegHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_mid_frame(self) -> None:
        """Write half of the next part's JPEG, then close the connection."""
        with self._lock:
            self._faults.append("drop")

    def lie_about_length_next(self) -> None:
        """Send the next part with a Content-Length 100 bytes short of its JPEG."""
        with self._lock:
            self._faults.append("short_length")

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if server.chunked else "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean; requests are recorded in server.requests

            def do_GET(self) -> None:
                server.requests.append(dict(self.headers.items()))
                if self.path.split("?")[0] != server.path:
                    self.send_error(404, "no such stream")
                    return
                if server.credentials and not self._authorized():
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.status != 200:
                    self.send_error(server.status)
                    return
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Cache-Control", "no-cache")
                if server.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self._stream()
                except OSError:
                    pass  # the client went away

            def _authorized(self) -> bool:
                import base64

                user, password = server.credentials or ("", "")
                expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                return self.headers.get("Authorization") == expected

            def _write(self, data: bytes) -> None:
                if server.chunked:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                else:
                    self.wfile.write(data)
                self.wfile.flush()

            def _stream(self) -> None:
                delimiter = STYLES[server.style][1]
                period = 1.0 / server.fps
                next_at = time.monotonic()
                index = 0
                while not server._stop.is_set():
                    jpeg = server.jpegs[index % len(server.jpegs)]
                    fault = server._next_fault()
                    headers = [b"Content-Type: image/jpeg"]
                    length = len(jpeg) - 100 if fault == "short_length" else len(jpeg)
                    if server.content_length:
                        headers.append(b"Content-Length: %d" % length)
                    if server.style == "ustreamer":
                        headers.append(b"X-Timestamp: %.6f" % time.time())
                    head = delimiter + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
                    if fault == "drop":
                        self._write(head + jpeg[: len(jpeg) // 2])
                        self.close_connection = True
                        return
                    self._write(head + jpeg + b"\r\n")
                    server.sent.append(index)
                    index += 1
                    next_at += period
                    if server._stop.wait(max(0.0, next_at - time.monotonic())):
                        return

        return Handler
