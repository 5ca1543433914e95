"""A fake Moonraker websocket: a real RFC 6455 server on 127.0.0.1, strict to the published
JSON-RPC API, with a printer the test drives.

    with FakeMoonrakerWS() as moonraker:               # binds port 0; moonraker.url
        moonraker.wait_subscribed()
        moonraker.start_print("cube.gcode")
        sent = moonraker.set_layer(1)                  # wall time_ns the notification left
        moonraker.gcode_response("// CAMFABRIC_TIMELAPSE_FRAME")
        moonraker.finish("complete")
        moonraker.restart()                            # killed and started again, same port
        assert moonraker.violations == []              # every client message was valid

Sources, cited at each rule as:
  [INTRO] github.com/Arksine/moonraker docs/external_api/introduction.md — JSON-RPC 2.0 over
          text frames on ws://host:port/websocket; request/response/error shapes; the startup
          sequence (server.info until klippy_state is "ready").
  [SERVER] docs/external_api/server.md — server.info, server.connection.identify (required
          client_name, version, type, url; optional api_key; once per connection).
  [PRINTER] docs/external_api/printer.md — printer.objects.subscribe: {"objects": {name: null
          | [fields]}}, a new request replaces the previous one, answer {"eventtime", "status"};
          "A persistent connection (Websocket or Unix Socket) is required".
  [NOTIFY] docs/external_api/jsonrpc_notifications.md — notifications carry no id and always
          positional params: notify_status_update [changes, eventtime] with only the changed
          fields, notify_gcode_response [line], notify_klippy_ready / _disconnected, no params.
  [AUTH]  docs/external_api/authorization.md — a websocket authenticates by the request or by
          identify's api_key; until then it is not authorised.
  [OBJ]   docs/printer_objects.md — print_stats: filename, state (standby, printing, paused,
          complete, error, cancelled), info {total_layer, current_layer}.
  [RPC]   jsonrpc.org/specification — error codes -32700, -32600, -32601, -32602.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

# [SERVER] identify's `type` values.
CLIENT_TYPES = ("web", "mobile", "desktop", "display", "bot", "agent", "other")
# [OBJ] print_stats.state values.
PRINT_STATES = ("standby", "printing", "paused", "complete", "error", "cancelled")
UNAUTHORIZED = 401  # Moonraker answers an unauthorised request with its HTTP status as the code


class FakeMoonrakerWS:
    """Moonraker's primary websocket with a Klipper behind it whose print the test drives."""

    def __init__(self, api_key: str = "") -> None:
        self.api_key = api_key
        self.port = 0
        self.url = ""
        self.violations: list[str] = []  # client messages that break the contract
        self.identified: list[dict[str, Any]] = []
        self.klippy_state = "ready"
        # [OBJ] the object Klipper reports; kept across a Moonraker restart, as Klipper keeps it.
        self.print_stats: dict[str, Any] = {
            "filename": "", "state": "standby", "message": "", "total_duration": 0.0,
            "print_duration": 0.0, "filament_used": 0.0,
            "info": {"total_layer": None, "current_layer": None}}
        self.sent: list[tuple[str, int]] = []  # (what, wall time_ns) of every notification
        self._lock = threading.Lock()
        self._subscribed = threading.Condition(self._lock)
        self._clients: dict[ServerConnection, dict[str, Any]] = {}
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._next_id = 1
        self._started: float | None = None  # monotonic, when the print began

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeMoonrakerWS:
        # A short close_timeout: a connection the test killed has nobody left to finish the close
        # handshake with, and loopback answers in microseconds when somebody is there.
        self._server = serve(self._handle, "127.0.0.1", self.port, compression=None, close_timeout=0.5)
        self.port = self._server.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-moonraker",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Moonraker killed: the listening socket and every connection gone at once."""
        if self._server is None:
            return
        with self._lock:
            clients = list(self._clients)
        for connection in clients:
            # No close frame: a killed process sends none, the kernel only ends the TCP. Shut
            # down, not closed: the connection's reader sees the end and closes the socket
            # itself (a descriptor closed under its poller would leave it waiting).
            try:
                connection.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(2)
        self._server = None
        with self._lock:
            self._clients.clear()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down `down_s`, and start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> FakeMoonrakerWS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the printer, driven by the test -------------------------------------------------------
    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """Wait until a client holds a print_stats subscription."""
        with self._subscribed:
            return self._subscribed.wait_for(
                lambda: any("print_stats" in c.get("objects", {}) for c in self._clients.values()),
                timeout)

    def subscribed_clients(self) -> int:
        with self._lock:
            return sum("print_stats" in c.get("objects", {}) for c in self._clients.values())

    def start_print(self, filename: str, total_layers: int | None = None) -> int:
        self._started = time.monotonic()
        return self.update(filename=filename, state="printing", message="", total_duration=0.0,
                           info={"total_layer": total_layers, "current_layer": None})

    def set_layer(self, layer: int) -> int:
        """SET_PRINT_STATS_INFO CURRENT_LAYER=layer; the wall time_ns the notification left."""
        info = dict(self.print_stats["info"], current_layer=layer)
        return self.update(info=info)

    def set_state(self, state: str) -> int:
        assert state in PRINT_STATES, state
        return self.update(state=state)

    def finish(self, state: str = "complete") -> int:
        return self.set_state(state)

    def update(self, **fields: Any) -> int:
        """Change print_stats; [NOTIFY] subscribers get only the fields that changed."""
        with self._lock:
            changed = {k: copy.deepcopy(v) for k, v in fields.items() if self.print_stats.get(k) != v}
            self.print_stats.update(copy.deepcopy(fields))
        return self._broadcast_status(changed)

    def gcode_response(self, line: str) -> int:
        """[NOTIFY] notify_gcode_response goes to every persistent connection."""
        return self._notify_all("notify_gcode_response", [line])

    def klippy_disconnected(self) -> int:
        """Klipper restarted: [NOTIFY] notify_klippy_disconnected; subscriptions end with it."""
        self.klippy_state = "disconnected"
        with self._lock:
            for client in self._clients.values():
                client["objects"] = {}
        return self._notify_all("notify_klippy_disconnected", None)

    def klippy_ready(self) -> int:
        self.klippy_state = "ready"
        return self._notify_all("notify_klippy_ready", None)

    # -- the wire ------------------------------------------------------------------------------
    def _handle(self, connection: ServerConnection) -> None:
        if connection.request is None or connection.request.path.split("?")[0] != "/websocket":
            # [INTRO] the primary websocket is /websocket (the bridge's /klippysocket is not faked)
            self.violations.append(f"websocket opened on {connection.request.path!r}, not /websocket")
            connection.close(1008, "not found")
            return
        header_key = connection.request.headers.get("X-Api-Key", "")
        with self._lock:
            self._clients[connection] = {"identified": False, "objects": {},
                                         "authorised": not self.api_key or header_key == self.api_key}
        try:
            for text in connection:
                self._receive(connection, text)
        except ConnectionClosed:
            pass
        except OSError:
            pass  # the test killed this server under the connection
        finally:
            with self._lock:
                self._clients.pop(connection, None)

    def _receive(self, connection: ServerConnection, text: str | bytes) -> None:
        if isinstance(text, bytes):  # [INTRO] JSON-RPC objects travel in text frames
            self.violations.append("a binary frame")
            return
        try:
            request = json.loads(text)
        except ValueError:
            self.violations.append(f"not JSON: {text[:80]!r}")
            self._send(connection, {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"},
                                    "id": None})
            return
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" \
                or not isinstance(request.get("method"), str):
            self.violations.append(f"not a JSON-RPC 2.0 request: {text[:80]!r}")
            self._send(connection, {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"},
                                    "id": request.get("id") if isinstance(request, dict) else None})
            return
        if "id" not in request:
            self.violations.append(f"{request['method']} sent without an id: no answer can come")
            return
        request_id = request["id"]
        params = request.get("params", {})
        try:
            result = self._dispatch(connection, request["method"], params)
        except _RpcError as exc:
            self._send(connection, {"jsonrpc": "2.0", "error": {"code": exc.code, "message": exc.message},
                                    "id": request_id})
            return
        self._send(connection, {"jsonrpc": "2.0", "result": result, "id": request_id})

    def _dispatch(self, connection: ServerConnection, method: str, params: Any) -> Any:
        if not isinstance(params, dict):  # [INTRO] requests carry named params
            self.violations.append(f"{method}: params must be an object")
            raise _RpcError(-32602, "Invalid params")
        with self._lock:
            client = self._clients.get(connection, {})
        if method == "server.connection.identify":
            return self._identify(client, params)
        if not client.get("authorised"):  # [AUTH]
            self.violations.append(f"{method} before authenticating")
            raise _RpcError(UNAUTHORIZED, "Unauthorized")
        if method == "server.info":  # [SERVER]
            return {"klippy_connected": self.klippy_state != "disconnected",
                    "klippy_state": self.klippy_state, "components": [], "failed_components": [],
                    "warnings": [], "websocket_count": len(self._clients), "moonraker_version": "fake",
                    "api_version": [1, 5, 0], "api_version_string": "1.5.0"}
        if method == "printer.objects.subscribe":  # [PRINTER]
            return self._subscribe(connection, client, params)
        raise _RpcError(-32601, f"Method not found: {method}")  # [RPC]

    def _identify(self, client: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        for key in ("client_name", "version", "type", "url"):  # [SERVER] all four REQUIRED
            if not isinstance(params.get(key), str):
                self.violations.append(f"identify without {key}")
                raise _RpcError(-32602, f"Invalid params: {key} is required")
        if params["type"] not in CLIENT_TYPES:
            self.violations.append(f"identify with type {params['type']!r}")
            raise _RpcError(-32602, f"Invalid Client Type: {params['type']}")
        if client.get("identified"):  # [SERVER] "repeated calls will result in an error"
            self.violations.append("identify called twice on one connection")
            raise _RpcError(-32600, "Connection already identified")
        if self.api_key and not client.get("authorised"):
            if params.get("api_key") != self.api_key:
                raise _RpcError(UNAUTHORIZED, "Unauthorized")
            client["authorised"] = True
        client["identified"] = True
        with self._lock:
            self.identified.append({k: v for k, v in params.items() if k != "api_key"})
            self._next_id += 1
            return {"connection_id": self._next_id}

    def _subscribe(self, connection: ServerConnection, client: dict[str, Any],
                   params: dict[str, Any]) -> dict[str, Any]:
        objects = params.get("objects")
        if not isinstance(objects, dict) \
                or not all(v is None or isinstance(v, list) for v in objects.values()):
            self.violations.append(f"subscribe with objects {objects!r}")
            raise _RpcError(-32602, "Invalid params: objects")
        if self.klippy_state != "ready":  # [INTRO] subscribe once klippy_state is "ready"
            self.violations.append("subscribe while Klippy is not ready")
            raise _RpcError(503, "Klippy Disconnected")
        status = {}
        with self._lock:  # [OBJ] total_duration: seconds since the print began (here only
            # refreshed in a subscription's answer, the one place the timelapse reads it)
            if self._started is not None and self.print_stats["state"] in ("printing", "paused"):
                self.print_stats["total_duration"] = time.monotonic() - self._started
        for name, fields in objects.items():
            if name == "print_stats":
                status[name] = self._fields(self.print_stats, fields)
        with self._subscribed:
            client["objects"] = dict(objects)  # [PRINTER] a new request replaces the previous one
            self._subscribed.notify_all()
        return {"eventtime": time.monotonic(), "status": status}

    @staticmethod
    def _fields(obj: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
        return copy.deepcopy(obj if fields is None else {k: obj[k] for k in fields if k in obj})

    def _broadcast_status(self, changed: dict[str, Any]) -> int:
        sent = time.time_ns()
        with self._lock:
            targets = []
            for connection, client in self._clients.items():
                if "print_stats" not in client.get("objects", {}):
                    continue
                update = self._fields(changed, client["objects"]["print_stats"])
                if update:
                    targets.append((connection, update))
        for connection, update in targets:
            self._send(connection, {"jsonrpc": "2.0", "method": "notify_status_update",
                                    "params": [{"print_stats": update}, time.monotonic()]})
        self.sent.append(("status", sent))
        return sent

    def _notify_all(self, method: str, params: list[Any] | None) -> int:
        sent = time.time_ns()
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        with self._lock:
            targets = list(self._clients)
        for connection in targets:
            self._send(connection, message)
        self.sent.append((method, sent))
        return sent

    @staticmethod
    def _send(connection: ServerConnection, message: dict[str, Any]) -> None:
        try:
            connection.send(json.dumps(message))
        except (ConnectionClosed, OSError):
            pass  # that client is gone; the others still get it


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


__all__ = ["FakeMoonrakerWS"]
