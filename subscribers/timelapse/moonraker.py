"""Moonraker's websocket, as the timelapse reads it: print state and G-code lines.

    link = MoonrakerLink(url, listener, api_key="")   # ws://127.0.0.1:7125/websocket
    link.start()   # a thread: connect, identify, wait for Klippy, subscribe, read; reconnect
    link.stop()

Moonraker's JSON-RPC 2.0 API over its primary websocket (github.com/Arksine/moonraker,
docs/external_api/): `server.connection.identify` (server.md, with `api_key` when Moonraker wants
one), `server.info` for `klippy_state` (the startup sequence of introduction.md, "Websocket
setup"), `printer.objects.subscribe` for `print_stats` (printer.md), whose answer is the full
state and whose `notify_status_update` notifications carry `[changes, eventtime]`;
`notify_gcode_response` `[line]`, `notify_klippy_ready` and `notify_klippy_disconnected`
(jsonrpc_notifications.md). A lost connection is retried with the shared backoff, forever.

The listener's methods run on the link's thread; each gets the monotonic time the message
arrived, which is when a trigger happened as far as the timelapse knows.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from typing import Any, Protocol

from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException
from websockets.sync.client import ClientConnection, connect

from ...runtime.backoff import Backoff
from ...runtime.clock import SYSTEM_CLOCK, Clock
from ...runtime.errors import CamfabricError
from ...runtime.logonce import LogOnce
from ...runtime.version import __version__

CLIENT_NAME = "camfabric-timelapse"
PROJECT_URL = "https://pypi.org/project/camfabric/"
SUBSCRIBED = {"print_stats": ["state", "filename", "info", "total_duration"]}
CALL_TIMEOUT_S = 5.0
KLIPPY_POLL_S = 2.0  # introduction.md: re-request server.info every 2 s while Klippy starts

log = logging.getLogger(__name__)
# The websocket library logs every frame at DEBUG, identify's api_key included: its logger for
# this link never goes below INFO, so `--log-level DEBUG` cannot put the key in a log.
wire_log = logging.getLogger(__name__ + ".websocket")
wire_log.setLevel(logging.INFO)


class MoonrakerError(CamfabricError):
    """Moonraker answered an error, or something that is not its JSON-RPC."""


class PrinterListener(Protocol):
    def on_connected(self) -> None: ...

    def on_status(self, print_stats: dict[str, Any], now: float, full: bool) -> None: ...

    def on_gcode_response(self, line: str, now: float) -> None: ...

    def on_klippy_lost(self, now: float) -> None: ...

    def on_disconnected(self, reason: str) -> None: ...


class _Lost(Exception):
    """Klippy went away: wait for it again on the same connection."""


class MoonrakerLink:
    """A thread that keeps one websocket to Moonraker and hands its events to a listener."""

    def __init__(self, url: str, listener: PrinterListener, *, api_key: str = "",
                 backoff: Backoff | None = None, clock: Clock = SYSTEM_CLOCK,
                 open_timeout_s: float = 5.0) -> None:
        self.url = url
        self.listener = listener
        self.api_key = api_key
        self.backoff = backoff or Backoff(base_s=0.5, cap_s=30.0)
        self.clock = clock
        self.open_timeout_s = open_timeout_s
        self.connected = False
        self.klippy_state = "unknown"
        self.connects = 0
        self.last_error = ""
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: ClientConnection | None = None
        self._failures = LogOnce(log)

    def start(self) -> MoonrakerLink:
        self._thread = threading.Thread(target=self._run, name="timelapse-moonraker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._connection()
                failures = 0
            except (OSError, TimeoutError, WebSocketException, MoonrakerError, ValueError) as exc:
                if self._stop.is_set():
                    break  # stop() closed the socket under the read
                failures += 1
                reason = _describe(exc)
                self.last_error = reason
                self._failures.warning("connect", "Moonraker at %s: %s; reconnecting (and again "
                                       "with backoff, logged once until it recovers)", self.url, reason)
            except Exception:  # a bug must not end the link; it is logged and the link retries
                failures += 1
                log.exception("Moonraker link: unexpected error; reconnecting")
            finally:
                if self.connected:
                    self.connected = False
                    self.listener.on_disconnected(self.last_error or "closed")
                self._ws = None
            if not self._stop.is_set():
                self._stop.wait(self.backoff.delay(max(failures, 1)))

    def _connection(self) -> None:
        try:
            ws = connect(self.url, open_timeout=self.open_timeout_s, close_timeout=1.0, proxy=None,
                         max_size=2**22, user_agent_header=f"camfabric/{__version__}",
                         logger=wire_log)
        except InvalidURI as exc:
            raise MoonrakerError(f"not a websocket URL: {exc}") from exc
        except InvalidHandshake as exc:
            raise MoonrakerError(f"the websocket handshake failed: {exc}") from exc
        self._ws = ws
        try:
            with ws:
                params = {"client_name": CLIENT_NAME, "version": __version__, "type": "other",
                          "url": PROJECT_URL}
                if self.api_key:
                    params["api_key"] = self.api_key
                self._call(ws, "server.connection.identify", params)
                self.connected = True
                self.connects += 1
                if self._failures.recovered():
                    log.info("Moonraker at %s: connected again", self.url)
                self.listener.on_connected()
                while not self._stop.is_set():
                    try:
                        self._follow_klippy(ws)
                    except _Lost:
                        self.listener.on_klippy_lost(self.clock.monotonic())
                if self._stop.is_set():
                    return
        finally:
            self._ws = None

    def _follow_klippy(self, ws: ClientConnection) -> None:
        """Wait until Klippy is ready, subscribe to print_stats, then read until it goes."""
        while not self._stop.is_set():
            info = self._call(ws, "server.info", None)
            self.klippy_state = str(info.get("klippy_state", "unknown")) if isinstance(info, dict) else "?"
            if self.klippy_state == "ready":
                break
            self._read(ws, KLIPPY_POLL_S, until_ready=True)
        if self._stop.is_set():
            return
        result = self._call(ws, "printer.objects.subscribe", {"objects": SUBSCRIBED})
        status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(status, dict):
            raise MoonrakerError("printer.objects.subscribe answered without a 'status' object")
        self.listener.on_status(dict(status.get("print_stats") or {}), self.clock.monotonic(), True)
        while not self._stop.is_set():
            self._read(ws, 0.5)

    def _read(self, ws: ClientConnection, timeout: float, *, until_ready: bool = False,
              want_id: int | None = None) -> Any:
        """Read messages for up to `timeout` s, handing notifications to the listener. Returns
        the answer to `want_id` when it comes; with `until_ready`, returns at Klippy's ready."""
        deadline = self.clock.monotonic() + timeout
        while not self._stop.is_set():
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                if want_id is not None:
                    raise MoonrakerError(f"no answer to request {want_id} within {timeout:g} s")
                return None
            try:
                text = ws.recv(timeout=min(remaining, 0.5))
            except TimeoutError:
                continue
            now = self.clock.monotonic()
            message = _parse(text)
            if "id" in message and "method" not in message:
                if message["id"] == want_id:
                    if "error" in message:
                        error = message["error"] if isinstance(message["error"], dict) else {}
                        raise MoonrakerError(f"{error.get('message', 'error')} "
                                             f"(code {error.get('code', '?')})")
                    return message.get("result")
                continue  # an answer nobody waits for any more
            method = message.get("method")
            params = message.get("params")
            if method == "notify_status_update" and isinstance(params, list) and params:
                changes = params[0] if isinstance(params[0], dict) else {}
                if isinstance(changes.get("print_stats"), dict):
                    self.listener.on_status(dict(changes["print_stats"]), now, False)
            elif method == "notify_gcode_response" and isinstance(params, list) and params:
                if isinstance(params[0], str):
                    self.listener.on_gcode_response(params[0], now)
            elif method == "notify_klippy_ready" and until_ready:
                return None
            elif method in ("notify_klippy_disconnected", "notify_klippy_shutdown"):
                self.klippy_state = "disconnected" if method.endswith("disconnected") else "shutdown"
                if want_id is None and not until_ready:
                    raise _Lost()
        return None

    def _call(self, ws: ClientConnection, method: str, params: dict[str, Any] | None) -> Any:
        request_id = next(self._ids)
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            request["params"] = params
        ws.send(json.dumps(request))
        return self._read(ws, CALL_TIMEOUT_S, want_id=request_id)


def _parse(text: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MoonrakerError(f"not JSON from Moonraker: {exc}") from exc
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise MoonrakerError("not a JSON-RPC 2.0 message from Moonraker")
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is Moonraker running?)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


__all__ = ["CLIENT_NAME", "MoonrakerError", "MoonrakerLink", "PrinterListener"]
