"""The contract between the gateway and Waitress's insides (gateway/waitress_seam.py).

Run this first when upgrading Waitress: it fails when anything the seam relies on is missing
or behaves differently, and when a stream is no longer handed over to the fan-out (and would
be served, silently, by one thread per client)."""

from __future__ import annotations

import inspect
import logging
import socket
import threading
import time

import pytest
import waitress.channel
import waitress.parser
import waitress.server
import waitress.task
import waitress.utilities

from camfabric.gateway import waitress_seam
from camfabric.gateway.mjpeg import FanoutRegistry
from camfabric.gateway.server import bind_socket
from camfabric.gateway.waitress_seam import HttpServer, request_connection

from .support import Feeder, wait_until


def test_every_internal_the_seam_names_is_there():
    params = inspect.signature(waitress.server.TcpWSGIServer.__init__).parameters
    assert list(params)[1:5] == ["application", "map", "_start", "_sock"]
    assert {"dispatcher", "adj", "sockinfo", "bind_socket"} <= set(params)
    assert callable(waitress.server.TcpWSGIServer.maintenance)
    assert len(inspect.signature(waitress.server.TcpWSGIServer.add_task).parameters) == 2  # (self, channel)
    assert "add_task" in inspect.getsource(waitress.channel.HTTPChannel.received)
    assert callable(waitress.utilities.build_http_date)
    channel = waitress.channel.HTTPChannel
    for name in ("readable", "handle_read", "service", "received", "send_continue", "handle_close"):
        assert callable(getattr(channel, name)), name
    for name in ("task_class", "error_task_class", "parser_class", "request", "will_close",
                 "close_when_flushed", "total_outbufs_len"):
        assert hasattr(channel, name), name
    assert channel.task_class is waitress.task.WSGITask
    assert channel.parser_class is waitress.parser.HTTPRequestParser
    assert callable(waitress.task.WSGITask.get_environment)
    assert waitress.task.WSGITask.chunked_response is False
    assert isinstance(waitress.task.Task.has_body, property)
    assert callable(waitress.task.ErrorTask.execute)
    assert list(inspect.signature(waitress.server.ThreadedTaskDispatcher.set_thread_count).parameters) == [
        "self", "count"]
    assert {"cancel_pending", "timeout"} <= set(
        inspect.signature(waitress.server.ThreadedTaskDispatcher.shutdown).parameters)


def test_a_request_that_cannot_be_parsed_has_no_path_and_ours_has_one():
    adj = waitress.adjustments.Adjustments()
    for parser_class in (waitress.parser.HTTPRequestParser, waitress_seam.RequestParser):
        parser = parser_class(adj)
        parser.received(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        assert parser.completed and parser.error is not None
    assert not hasattr(waitress.parser.HTTPRequestParser(adj), "path")
    assert waitress_seam.RequestParser(adj).path == ""
    parsed = waitress.parser.HTTPRequestParser(adj)
    parsed.received(b"GET /latest/0?a=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert (parsed.completed, parsed.error, parsed.command, parsed.path, parsed.query, parsed.version) == \
        (True, None, "GET", "/latest/0", "a=1", "1.0")
    assert parsed.headers["CONNECTION"] == "keep-alive"
    assert (parsed.content_length, parsed.chunked) == (0, False)


class Server:
    """An HttpServer on port 0 serving `app` on a background thread."""

    def __init__(self, app, threads: int = 4) -> None:
        self.http = HttpServer(app, bind_socket("127.0.0.1", 0), threads)
        self.port = self.http.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.http.run, daemon=True)
        self.thread.start()

    def inner(self):
        return self.http._server  # the contract test may look inside; nothing else does

    def stop(self) -> None:
        self.http.stop(1.5)
        self.thread.join(2)


def ask(port: int, request: bytes, half_close: bool = False, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_a_taken_connection_is_written_directly_and_given_back():
    seen: dict = {}

    def app(environ, start_response):
        connection = request_connection(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"from waitress;"
        seen["headers_only"] = connection.headers_only
        sock = connection.take(lambda: True, 2.0)
        seen["chunked"] = connection.chunked  # decided with the headers, which have left
        seen["out_of_loop"] = sock is not None and all(
            ch is not connection._channel for ch in server.inner()._map.values())
        seen["still_counted"] = connection._channel in server.inner().active_channels.values()
        body = b"written directly"
        if connection.chunked:
            body = b"%X\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        sock.sendall(body)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        connection.give_back()

    server = Server(app)
    try:
        answer = ask(server.port, b"GET / HTTP/1.0\r\n\r\n")
        assert answer.endswith(b"from waitress;written directly"), answer
        assert seen == {"chunked": False, "headers_only": False, "out_of_loop": True,
                        "still_counted": True}
        answer = ask(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert seen["chunked"] is True and b"written directly" in answer
        ask(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert seen["headers_only"] is True
        # Given back, the connection is closed by Waitress as any other: none is left.
        wait_until(lambda: not server.inner().active_channels, what="every connection closed")
    finally:
        server.stop()


def test_no_connection_outside_waitress():
    assert request_connection({"REQUEST_METHOD": "GET"}) is None


def test_stop_hangs_up_on_a_taken_connection_and_returns_in_time():
    taken = threading.Event()

    def app(environ, start_response):
        connection = request_connection(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x"
        sock = connection.take(lambda: True, 2.0)
        taken.set()
        time.sleep(3)  # a stream whose writer is busy elsewhere
        sock.close()
        connection.give_back()

    server = Server(app)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    client.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert taken.wait(5)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.5
    client.settimeout(2)
    data = b""
    while chunk := client.recv(4096):
        data += chunk
    client.close()
    assert data.startswith(b"HTTP/1.0 200")


def test_a_half_closing_client_gets_its_answer_and_the_connection_closes():
    def app(environ, start_response):
        time.sleep(0.05)  # the client's end of input arrives while the answer is on its way
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = Server(app)
    try:
        for request in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            answer = ask(server.port, request, half_close=True)
            assert answer.startswith(b"HTTP/1.") and answer.endswith(b"\r\n\r\nok"), answer
    finally:
        server.stop()


def test_a_header_line_without_colon_then_a_half_close_logs_no_traceback(caplog):
    server = Server(lambda environ, start_response: [])
    try:
        with caplog.at_level(logging.INFO, logger="waitress"):
            for _ in range(20):
                answer = ask(server.port, b"GET / HTTP/1.0\r\nno colon\r\n\r\n", half_close=True)
                assert answer.startswith(b"HTTP/1.0 400") and b'"title": "Bad Request"' in answer
    finally:
        server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_waitress_warns_of_a_full_queue_on_its_queue_logger():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    queue_log = logging.getLogger(waitress_seam.QUEUE_LOG)
    gate = threading.Event()

    def app(environ, start_response):
        gate.wait(5)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    server = Server(app, threads=1)
    queue_log.removeFilter(waitress_seam.QUEUE_LOG_THROTTLE)
    queue_log.addHandler(handler)
    clients = []
    try:
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            clients.append(client)
        wait_until(lambda: records, what="a queue-depth warning")
    finally:
        gate.set()
        queue_log.removeHandler(handler)
        queue_log.addFilter(waitress_seam.QUEUE_LOG_THROTTLE)
        for client in clients:
            client.close()
        server.stop()
    assert str(records[0].msg).startswith("Task queue depth is")


@pytest.fixture
def gateway(make_gateway, node):
    gw = make_gateway(node.endpoint)
    node.frame(0)
    return gw


def test_a_gateway_stream_is_handed_over_to_the_fan_out(gateway, node):
    with Feeder(node, fps=20):
        wait_until(lambda: 0 in gateway.cache.camera_ids(), what="camera 0 announced")
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"GET /cam/0 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while data.count(b"\xff\xd9") < 2:
                data += sock.recv(65536)
            clients = FanoutRegistry.of(gateway.cache).clients()
            assert len(clients) == 1 and clients[0]["delivered"] >= 1, clients
