"""The HTTP server under the fakes of outside services: threaded, on 127.0.0.1, a free port.

    server = LoopbackHTTPServer(Handler).start("fake-service")
    requests.get(server.url + "/path")
    server.stop()

An exception inside the fake itself is kept in `errors` (a bug in the test, which the test can
assert on); a client that timed out and went away is part of the tests, not a fault.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.errors: list[BaseException] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self, name: str) -> LoopbackHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(2)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        self.errors.append(exc)
        super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no access log on stderr, and every method handed to `serve()`, where
    the fake answers a method its service does not take (405) like any other request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def serve(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.serve()

    def do_POST(self) -> None:
        self.serve()

    def do_PUT(self) -> None:
        self.serve()

    def do_DELETE(self) -> None:
        self.serve()


class LoopbackFake:
    """A fake service served by a LoopbackHTTPServer: `with Fake() as fake: … fake.url …`.

    A subclass names its `handler` class (a QuietHandler) and the attribute through which the
    handler reaches the fake (`handler_attr`).
    """

    handler: type[QuietHandler]
    handler_attr = "fake"
    thread_name = "fake-service"
    url = ""
    _server: LoopbackHTTPServer | None = None

    def start(self) -> Any:
        handler = type("Handler", (self.handler,), {self.handler_attr: self})
        self._server = LoopbackHTTPServer(handler).start(self.thread_name)
        self.errors = self._server.errors  # exceptions inside the fake itself: a test bug
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
