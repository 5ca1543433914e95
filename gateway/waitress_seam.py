"""The gateway's one seam to Waitress: every use of what Waitress does not publish is here.

Waitress's public API serves a WSGI app and nothing more; the gateway also needs to build
and stop a server on a socket it made, to take a request's connection over for an MJPEG
stream (the fan-out writes its parts, mjpeg.py) and give it back, and to correct a few
answers. This module offers exactly that:

    HttpServer(app, sock, threads)      Waitress tuned for the gateway (below); .run() serves
                                        until .stop(timeout); .socket is the listening socket
      quick=answer                      `answer(QuickRequest)` may answer a request whole on
                                        Waitress's loop thread, before any request thread or
                                        WSGI environ (a cached JPEG): (headers, body) or None
                                        to let the app answer it as usual
    request_connection(environ)         the Waitress connection serving a request, or None
                                        where the server is not Waitress (Falcon's test client)
      .headers_only                     the response has no body (HEAD, 204, 304)
      .chunked                          the body is framed as HTTP/1.1 chunks
      .take(alive, timeout)             once the response headers have left: a non-blocking
                                        duplicate of the socket, the connection out of
                                        Waitress's loop meanwhile; None when it is gone
      .give_back()                      the connection back to Waitress, which closes it

What it relies on inside Waitress 3.0 — each checked by tests/gateway/test_waitress_seam.py,
which fails when any of them is missing or behaves differently (run it first when upgrading
Waitress):

- `waitress.server.TcpWSGIServer`'s constructor and its test-shim arguments `(app, map,
  _start, _sock)`, `bind_socket=False`, `sockinfo`; its `channel_class`, `maintenance(now)`,
  `active_channels`, `_map`, `trigger.pull_trigger(callable)`, `task_dispatcher.shutdown`,
  and `add_task(channel)`, called on the loop thread by `received` with `requests_lock` held
  once a request is whole and the only one in `channel.requests`;
- `waitress.channel.HTTPChannel`: `task_class`, `error_task_class`, `parser_class`,
  `received`, `handle_read`, `readable`, `service`, `send_continue`, `requests`, `request`,
  `will_close`, `close_when_flushed`, `connected`, `total_outbufs_len`, `socket`, `_fileno`,
  `_map`, `handle_close`;
- `waitress.task.WSGITask.get_environment`, `finish`, `wrote_header`, `chunked_response`,
  `has_body`;
  `waitress.task.ErrorTask.execute` with `status`, `response_headers`, `content_length`;
- `waitress.parser.HTTPRequestParser`: `completed`, `expect_continue`, `error`, `command`,
  `path`, `query`, `version`, `headers` (upper-case names), `close()`, and `path` set only for
  a request it could parse;
- `waitress.utilities.build_http_date`; Waitress's answers list their headers sorted by name;
- the `waitress.queue` logger's "Task queue depth is N" warning, one per request.

Waitress settings, and why:

- `outbuf_high_watermark` small (256 KiB) and `SO_SNDBUF` 256 KiB on each connection.
- `channel_request_lookahead = 1`: Waitress keeps reading the socket during a response and
  offers `waitress.client_disconnected`, so a stream served by its iterator notices a client
  that left. An end of input while a response is on its way is a *half-close* here, not a
  hang-up: `printf 'GET /snap/0 HTTP/1.0\\r\\n\\r\\n' | socat - TCP:…` gets its answer.
- An API that serves GET (and WHEP's small SDP bodies) cannot be starved by clients that
  hold connections: a request head must be whole within HEADER_TIMEOUT_S (a slowloris is
  cut off), idle connections close after IDLE_TIMEOUT_S, heads beyond MAX_HEADER_BYTES and
  bodies beyond MAX_BODY_BYTES are refused unread, and the connection limit is high
  (CONNECTION_LIMIT, within the descriptor limit), so a hundred idle sockets do not lock
  everyone else out.
- Errors Waitress answers itself (a malformed request line, a head too large) are JSON with
  the CORS headers, as every other answer; `Expect: 100-continue` with no body is answered,
  not left waiting for a body that never comes; "Task queue depth" is logged once a minute.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import waitress.adjustments
import waitress.channel
import waitress.parser
import waitress.server
import waitress.task
import waitress.utilities
import waitress.wasyncore

log = logging.getLogger(__name__)

OUTBUF_HIGH_WATERMARK = 256 * 1024
SEND_BUFFER_BYTES = 256 * 1024
# An API that serves GET (and HEAD, OPTIONS), and takes only WHEP's SDP offers as bodies: a
# request head must be whole within HEADER_TIMEOUT_S of its first byte and fit MAX_HEADER_BYTES;
# a body beyond MAX_BODY_BYTES (a browser's offer is a few KiB) is refused (413) without being
# read; a connection with no request running and nothing sent or received for IDLE_TIMEOUT_S
# is closed; CLEANUP_INTERVAL_S is how often that is checked.
HEADER_TIMEOUT_S = 5.0
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 32 * 1024
IDLE_TIMEOUT_S = 15
CLEANUP_INTERVAL_S = 1
# Open connections per worker, bounded further by the descriptors the process may open (an
# MJPEG stream uses two: Waitress's and the fan-out's duplicate).
CONNECTION_LIMIT = 1000
DESCRIPTION_CHARS = 200
# How long a request thread sends a whole body itself before leaving the rest to Waitress.
SEND_DIRECT_TIMEOUT_S = 1.0
# The environ key under which the gateway's task makes itself known to the app.
ENVIRON_KEY = "camfabric.connection"
# Headers every answer carries (app.py's Cors, for what the app answers itself).
CORS_ORIGIN = ("Access-Control-Allow-Origin", "*")


class Throttle(logging.Filter):
    """Lets a message through at most once per `interval_s`, counting what it held back.

    Waitress warns "Task queue depth is N" for every request that finds all threads busy; under
    load that is a line per request, so the gateway lets one through per interval.
    """

    def __init__(self, interval_s: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = str(record.msg), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {now - last:.0f} s)"
        self._last[key] = now
        return True


QUEUE_LOG = "waitress.queue"
QUEUE_LOG_THROTTLE = Throttle()


# -- the channel: one client connection ------------------------------------------------------
class RequestParser(waitress.parser.HTTPRequestParser):
    """Waitress's parser with a path before one is parsed: Waitress names `request.path` in
    its log line for a client that left during an error answer (a header line without a
    colon, then a half-close), and a request it could not parse has none."""

    path = ""


class JsonErrorTask(waitress.task.ErrorTask):
    """Writes Waitress's own error answers as Falcon's JSON, with the CORS headers:

        {"title": "Bad Request", "description": "<what Waitress found, cut short>"}
    """

    expose_headers = ""  # set by HttpServer: the app's Access-Control-Expose-Headers

    def execute(self) -> None:
        error = self.request.error
        description = str(error.body)
        if len(description) > DESCRIPTION_CHARS:
            description = description[:DESCRIPTION_CHARS] + "…"
        body = json.dumps({"title": error.reason, "description": description}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), CORS_ORIGIN])
        if self.expose_headers:
            self.response_headers.append(("Access-Control-Expose-Headers", self.expose_headers))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GatewayTask(waitress.task.WSGITask):
    """Waitress's WSGI task, put in the environ so that a stream can take its connection.

    The answer to HEAD of a response of unknown length (a stream) carries the headers GET's
    would, `Transfer-Encoding: chunked` included, and no body: Waitress would end it with the
    chunked body's last chunk, bytes a HEAD answer must not have (RFC 9110 §9.3.2)."""

    def get_environment(self) -> dict[str, Any]:
        environ = super().get_environment()
        environ[ENVIRON_KEY] = RequestConnection(self)
        return environ

    def write(self, data: bytes) -> None:
        """Waitress's write, and a shorter way for a whole body given at once (a JPEG): the
        head and the body go straight to the socket in one `sendmsg` from this thread, with
        no copy into Waitress's buffers, when nothing is queued before them; what the socket
        does not take within SEND_DIRECT_TIMEOUT_S goes to Waitress's buffers as usual."""
        if (self.wrote_header or not data or not self.complete or self.content_length != len(data)
                or self.request.command == "HEAD" or not self.has_body):
            super().write(data)
            return
        channel = self.channel
        head = self.build_response_header()
        if self.chunked_response:  # not with a Content-Length; for completeness
            channel.write_soon(head)
            self.wrote_header = True
            super().write(data)
            return
        self.wrote_header = True
        self.content_bytes_written += len(data)
        with channel.outbuf_lock:
            if not channel.connected:
                raise waitress.channel.ClientDisconnected
            direct = not channel.total_outbufs_len  # nothing queued: these bytes go first
        rest = [memoryview(head), memoryview(data).cast("B")]
        if direct:
            # Without the buffer lock, which Waitress's loop takes to close a connection: only
            # this request's thread writes to it now, and a connection closed meanwhile makes
            # sendmsg fail and write_soon raise ClientDisconnected, as Waitress's own writes do.
            sock = channel.socket  # None once Waitress has closed the connection
            if sock is not None:
                rest = _send_direct(sock, rest, SEND_DIRECT_TIMEOUT_S)
                channel.last_activity = time.time()
        for buffer in rest:
            channel.write_soon(buffer)

    def finish(self) -> None:
        if self.request.command == "HEAD":
            if not self.wrote_header:
                self.write(b"")
            self.chunked_response = False
        super().finish()


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """Waitress's Date header value, made once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, waitress.utilities.build_http_date(now))
    return _date_cache[1]


def _send_direct(sock: socket.socket, buffers: list[memoryview], timeout: float) -> list[memoryview]:
    """Send `buffers` on the non-blocking `sock`, waiting for room up to `timeout` s in all;
    what is left unsent (nothing, normally). A socket error leaves everything to Waitress,
    which meets it on its next send and closes the connection as it always does."""
    deadline = time.monotonic() + timeout
    poller = None
    while buffers:
        try:
            sent = sock.sendmsg(buffers)
        except BlockingIOError:
            sent = 0
        except OSError:
            return buffers
        while buffers and sent >= len(buffers[0]):
            sent -= len(buffers[0])
            del buffers[0]
        if sent:
            buffers[0] = buffers[0][sent:]
        if not buffers:
            break
        left = deadline - time.monotonic()
        if left <= 0:  # a timeout of 0: one try only
            break
        if poller is None:
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
        poller.poll(left * 1000)
    return buffers


class GatewayChannel(waitress.channel.HTTPChannel):
    """A client connection that answers errors as JSON, answers a client that half-closed,
    does not wait for a body after `100 Continue` that was never coming, and remembers when
    its current request began to arrive (for the header timeout)."""

    task_class = GatewayTask
    error_task_class = JsonErrorTask
    parser_class = RequestParser
    request_started = 0.0
    half_closed = False  # the client ended its input; answers still go out

    def readable(self) -> bool:
        return not self.half_closed and super().readable()

    def handle_read(self) -> None:
        if not self.requests:
            super().handle_read()  # nothing to answer: an end of input is a hang-up
            return
        try:
            data = self.socket.recv(self.adj.recv_bytes)
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("%s: connection lost: %s", self.addr, exc)
            self.handle_close()
            return
        if data:
            self.last_activity = time.time()
            self.received(data)
        else:
            # A half-close (shutdown(SHUT_WR), socat, `nc -N`): the answer still goes out,
            # then the connection closes, as no further request can come.
            self.half_closed = True

    def service(self) -> None:
        super().service()
        if self.half_closed:
            with self.requests_lock:
                if not self.requests:
                    self.close_when_flushed = True
            self.server.pull_trigger()

    def received(self, data: bytes) -> bool:
        before = self.request
        result = super().received(data)
        if self.request is not None and self.request is not before:
            self.request_started = time.monotonic()
        return result

    def send_continue(self) -> None:
        # RFC 9110 §10.1.1: a server may omit the 100 when the content has all arrived.
        if self.request is not None and self.request.completed:
            self.request.expect_continue = False
            return
        super().send_continue()


@dataclass(frozen=True, slots=True)
class QuickRequest:
    """What a quick answer may look at: a whole request with no body."""

    method: str
    path: str
    query: str
    remote_addr: str


QuickAnswer = Callable[[QuickRequest], "tuple[list[tuple[str, str]], bytes | memoryview] | None"]


class GatewayServer(waitress.server.TcpWSGIServer):
    """Waitress's TCP server with the gateway's channel, a header timeout, and quick answers."""

    channel_class = GatewayChannel
    header_timeout_s = HEADER_TIMEOUT_S
    quick: QuickAnswer | None = None

    def add_task(self, channel: GatewayChannel) -> None:
        # Called with the channel's requests_lock held: on the loop thread when a request has
        # just been parsed and is the channel's only one, or on a request thread that has
        # answered one and finds more (pipelined). Only a channel's sole request is answered
        # quickly; with more queued, a task serves them in order as Waitress does.
        if self.quick is None or len(channel.requests) != 1 or not self._answer_quickly(channel):
            super().add_task(channel)

    def _answer_quickly(self, channel: GatewayChannel) -> bool:
        """Answer the channel's request here if `quick` does: a 200 with the given headers and
        body, sent straight from the body's buffer, Waitress's headers (Date, Server,
        Connection) added as it would. What the socket does not take at once is left in the
        channel's buffer, which the loop sends on as any answer of Waitress's own."""
        request = channel.requests[0]
        if (request.error or channel.total_outbufs_len or channel.will_close
                or channel.close_when_flushed or request.content_length or request.chunked):
            return False
        answer = self.quick(QuickRequest(request.command, request.path, request.query,
                                         channel.addr[0] if channel.addr else ""))
        if answer is None:
            return False
        headers, body = answer
        connection = request.headers.get("CONNECTION", "").lower()
        close = (connection != "keep-alive") if request.version == "1.0" else connection == "close"
        close = close or channel.half_closed
        headers = [*headers, ("Date", _http_date()), ("Server", self.adj.ident)]
        if close:
            headers.append(("Connection", "close"))
        elif request.version == "1.0":
            headers.append(("Connection", "Keep-Alive"))
        head = "".join([f"HTTP/{request.version} 200 OK\r\n",
                        *(f"{k}: {v}\r\n" for k, v in sorted(headers, key=lambda kv: kv[0])),
                        "\r\n"]).encode("latin-1")
        channel.requests.pop(0)
        request.close()
        rest = _send_direct(channel.socket, [memoryview(head), memoryview(body).cast("B")], 0.0)
        channel.last_activity = time.time()
        for buffer in rest:
            channel.write_soon(buffer)
        if close:
            channel.close_when_flushed = True
        return True

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections (channel_timeout)
        cutoff = time.monotonic() - self.header_timeout_s
        for channel in list(self.active_channels.values()):
            if channel.request is not None and not channel.requests \
                    and channel.request_started < cutoff:
                log.debug("closing %s: request head incomplete after %g s", channel.addr,
                          self.header_timeout_s)
                channel.will_close = True


# -- taking a request's connection over ------------------------------------------------------
class RequestConnection:
    """The Waitress connection serving one request, for a response that writes itself."""

    def __init__(self, task: waitress.task.WSGITask) -> None:
        self._task = task
        self._channel = task.channel
        self._parked_fd: int | None = None

    @property
    def headers_only(self) -> bool:
        """Whether the response has no body to stream (HEAD, or a status without one)."""
        return not self._task.has_body or self._task.request.command == "HEAD"

    @property
    def chunked(self) -> bool:
        """Whether the response body is framed as HTTP/1.1 chunks (decided with its headers)."""
        return bool(self._task.chunked_response)

    def client_gone(self) -> bool:
        return not self._channel.connected

    def take(self, alive: Callable[[], bool], timeout: float) -> socket.socket | None:
        """Wait (up to `timeout` s, while `alive()`) until Waitress has sent all it holds —
        the response headers and what the app returned so far — then take the connection out
        of Waitress's loop and return a non-blocking duplicate of its socket; None when the
        client left or the time ran out. Waitress's loop polls every mapped connection on each
        turn (every request, every write elsewhere): with 200 streams that cost its thread
        7 µs per delivered part. The connection stays counted in `active_channels` throughout
        (the connection limit, `HttpServer.stop`)."""
        channel = self._channel
        deadline = time.monotonic() + timeout
        while channel.total_outbufs_len and alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        sock = channel.socket
        if channel.total_outbufs_len or sock is None or not alive() or not channel.connected:
            return None
        try:
            dup = sock.dup()
            dup.setblocking(False)
        except OSError as exc:
            log.debug("connection of %s gone before it was taken over: %s", channel.addr, exc)
            return None
        self._parked_fd = channel._fileno
        channel._map.pop(self._parked_fd, None)
        return dup

    def give_back(self) -> None:
        """Return a taken connection to Waitress (on its loop thread), which closes it as any
        other once the response ends; closed here when Waitress's loop has ended. Once only."""
        fd, self._parked_fd = self._parked_fd, None
        if fd is None:
            return
        channel = self._channel

        def back() -> None:
            if channel._fileno == fd and channel.connected:
                channel._map[fd] = channel

        try:
            channel.server.trigger.pull_trigger(back)
        except OSError:  # Waitress's loop has ended: nothing else will close it
            channel.handle_close()


def request_connection(environ: dict[str, Any]) -> RequestConnection | None:
    """The Waitress connection serving the request of `environ`; None under another server."""
    connection = environ.get(ENVIRON_KEY)
    return connection if isinstance(connection, RequestConnection) else None


# -- building and stopping the server --------------------------------------------------------
def connection_limit() -> int:
    """CONNECTION_LIMIT, or fewer where the process may not open that many descriptors; the
    soft descriptor limit is raised to the hard one first."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return CONNECTION_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.debug("cannot raise the descriptor limit from %d: %s", soft, exc)
    return max(50, min(CONNECTION_LIMIT, (soft - 64) // 2))


class HttpServer:
    """Waitress serving `app` on the listening `sock` with `threads` request threads;
    `expose_headers` is the Access-Control-Expose-Headers of Waitress's own error answers."""

    def __init__(self, app: Any, sock: socket.socket, threads: int, expose_headers: str = "",
                 quick: QuickAnswer | None = None) -> None:
        adj = waitress.adjustments.Adjustments(
            sockets=[sock], threads=threads, outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
            channel_request_lookahead=1, connection_limit=connection_limit(),
            channel_timeout=IDLE_TIMEOUT_S, cleanup_interval=CLEANUP_INTERVAL_S,
            max_request_header_size=MAX_HEADER_BYTES, max_request_body_size=MAX_BODY_BYTES,
            asyncore_use_poll=True, ident="camfabric", clear_untrusted_proxy_headers=True,
        )
        adj.socket_options = [*adj.socket_options,
                              (socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)]
        JsonErrorTask.expose_headers = expose_headers
        dispatcher = waitress.server.ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        # Waitress's test-shim arguments: our own map, started, on our socket, not bound again.
        self._server = GatewayServer(
            app, {}, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
            sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
        self._server.quick = quick
        queue_log = logging.getLogger(QUEUE_LOG)
        if QUEUE_LOG_THROTTLE not in queue_log.filters:
            queue_log.addFilter(QUEUE_LOG_THROTTLE)

    @property
    def socket(self) -> socket.socket:
        return self._server.socket

    @property
    def idle_timeout_s(self) -> float:
        """How long a connection with no request running may stay silent before it closes."""
        return self._server.adj.channel_timeout

    @idle_timeout_s.setter
    def idle_timeout_s(self, seconds: float) -> None:
        self._server.adj.channel_timeout = seconds

    def run(self) -> None:
        """Serve until `stop()` (on the calling thread)."""
        self._server.run()

    def stop(self, timeout: float = 1.5) -> None:
        """Hang up on every client (taken-over connections too), end the request threads and
        Waitress's loop; returns within about `timeout` s."""
        deadline = time.monotonic() + timeout
        # On Waitress's own loop thread: this also releases a request thread blocked on a
        # client that stopped reading (its next write raises).
        self._on_loop(self._hang_up, timeout / 3)
        self._server.task_dispatcher.shutdown(cancel_pending=True,
                                              timeout=max(0.1, deadline - time.monotonic() - 0.2))
        # An empty socket map ends Waitress's loop.
        self._on_loop(lambda: waitress.wasyncore.close_all(self._server._map), 0.1)

    def _on_loop(self, action: Callable[[], None], timeout: float) -> None:
        """Run `action` on Waitress's loop thread and wait up to `timeout` s for it."""
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        try:
            self._server.trigger.pull_trigger(run)
        except OSError as exc:  # the loop has already closed its trigger
            log.debug("gateway loop already stopped: %s", exc)
            return
        done.wait(timeout)

    def _hang_up(self) -> None:
        self._server.accepting = False
        # The map, and the connections taken out of it (RequestConnection.take).
        for dispatcher in {*self._server._map.values(), *self._server.active_channels.values()}:
            if isinstance(dispatcher, waitress.channel.HTTPChannel):
                dispatcher.handle_close()
