"""A fake Moonraker webcam API: a real HTTP server on 127.0.0.1, strict to the published contract.

    with FakeMoonraker(api_key="k") as moonraker:
        moonraker.add_config_webcam("Printer", stream_url="/webcam/?action=stream")
        ...  # point `camfabric moonraker --register` at moonraker.url
        moonraker.webcams()  # what Mainsail would list

Sources, cited at each rule as:
  [DOC]  Moonraker's webcam API, github.com/Arksine/moonraker docs/external_api/webcams.md
  [SRC]  its implementation, moonraker/components/webcam.py (WebcamManager, WebCam)
  [API]  the HTTP envelope, docs/external_api/introduction.md and moonraker/app.py write_error
Only the webcam endpoints are served; anything else is 404.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.loopback import LoopbackFake, QuietHandler

ROTATIONS = (0, 90, 180, 270)  # [SRC] WebCam.__init__: "Invalid value for 'rotation'"
# [DOC] POST /server/webcams/item parameters and their defaults for a new entry.
DEFAULTS: dict[str, Any] = {
    "location": "printer", "icon": "mdiWebcam", "enabled": True, "service": "mjpegstreamer",
    "target_fps": 15, "target_fps_idle": 5, "snapshot_url": "", "flip_horizontal": False,
    "flip_vertical": False, "rotation": 0, "aspect_ratio": "4:3", "extra_data": {},
}
TYPES: dict[str, type] = {"name": str, "location": str, "icon": str, "enabled": bool, "service": str,
                          "target_fps": int, "target_fps_idle": int, "stream_url": str,
                          "snapshot_url": str, "flip_horizontal": bool, "flip_vertical": bool,
                          "rotation": int, "aspect_ratio": str, "extra_data": dict}
PROTECTED = ("source", "uid")  # [SRC] WebCam._protected_fields


class MoonrakerError(Exception):
    def __init__(self, message: str, code: int = 400) -> None:  # [SRC] server.error defaults to 400
        super().__init__(message)
        self.code = code


class FakeMoonraker(LoopbackFake):
    """Moonraker's /server/webcams/* on a free loopback port; `url` is its base URL."""

    handler_attr = "moonraker"
    thread_name = "fake-moonraker"

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._cams: dict[str, dict[str, Any]] = {}  # by name, in insertion order
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.errors: list[BaseException] = []


    # -- what a test sets up and reads ---------------------------------------------------------
    def add_config_webcam(self, name: str, **fields: Any) -> None:
        """A `[webcam NAME]` section of moonraker.conf: listed with source "config" [DOC]."""
        with self._lock:
            self._cams[name] = {**DEFAULTS, **fields, "name": name, "source": "config",
                                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"moonraker.webcam.{name}"))}

    def webcams(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._cams.values()]

    # -- the contract --------------------------------------------------------------------------
    def handle(self, method: str, path: str, args: dict[str, Any], api_key: str | None) -> Any:
        if self.api_key is not None and api_key != self.api_key:
            raise MoonrakerError("Unauthorized", 401)  # [DOC authorization] X-Api-Key header
        allowed = {"/server/webcams/list": ("GET",), "/server/webcams/item": ("GET", "POST", "DELETE")}
        if path not in allowed:
            raise MoonrakerError("Not Found", 404)
        if method not in allowed[path]:  # [SRC] the methods each endpoint registers
            raise MoonrakerError("Method Not Allowed", 405)
        if path == "/server/webcams/list":
            return {"webcams": self.webcams()}  # [DOC] List Webcams
        with self._lock:
            cam = self._lookup(args, required=method != "POST")
            if method == "GET":
                return {"webcam": dict(cam)}
            if method == "DELETE":
                if cam["source"] == "config":  # [SRC] "Cannot delete webcam ... sourced from ..."
                    raise MoonrakerError(f"Cannot delete webcam '{cam['name']}' sourced from "
                                         "Moonraker configuration")
                del self._cams[cam["name"]]
                return {"webcam": cam}
            if cam is not None:
                if cam["source"] == "config":  # [DOC] Note; [SRC] the message, status 400
                    raise MoonrakerError(f"Cannot overwrite webcam '{cam['name']}' sourced from "
                                         "Moonraker configuration")
                new_name = args.get("name")
                if new_name is not None and new_name != cam["name"] and new_name in self._cams:
                    raise MoonrakerError(f"Cannot rename webcam from '{cam['name']}' to '{new_name}'.  "
                                         f"Webcam with requested name '{new_name}' already exists.")
                updated = dict(cam)
                for key, value in args.items():  # [SRC] WebCam.update: known fields only
                    if key in TYPES and key not in PROTECTED:
                        updated[key] = _typed(key, value)
                _validate(updated)
                del self._cams[cam["name"]]
                self._cams[updated["name"]] = updated
                return {"webcam": dict(updated)}
            for required in ("name", "stream_url"):  # [DOC] REQUIRED parameters
                if not isinstance(args.get(required), str):
                    raise MoonrakerError(f"No data for argument: {required}")
            entry = {**DEFAULTS, **{k: _typed(k, v) for k, v in args.items() if k in TYPES},
                     "source": "database", "uid": str(uuid.uuid4())}
            _validate(entry)
            self._cams[entry["name"]] = entry
            return {"webcam": dict(entry)}

    def _lookup(self, args: dict[str, Any], required: bool) -> dict[str, Any] | None:
        # [SRC] _lookup_camera: by uid when given (404 if unknown), else by name.
        if "uid" in args:
            for cam in self._cams.values():
                if cam["uid"] == args["uid"]:
                    return cam
            raise MoonrakerError(f"Webcam with UID {args['uid']} not found", 404)
        name = args.get("name")
        if not isinstance(name, str):
            raise MoonrakerError("No data for argument: name")
        cam = self._cams.get(name)
        if required and cam is None:
            raise MoonrakerError(f"Webcam {name} not found", 404)
        return cam


def _typed(key: str, value: Any) -> Any:
    want = TYPES[key]
    if want is int and isinstance(value, bool) or not isinstance(value, want):
        raise MoonrakerError(f"Unable to convert argument '{key}' to {want.__name__}")
    return value


def _validate(entry: dict[str, Any]) -> None:
    if entry["rotation"] not in ROTATIONS:
        raise MoonrakerError(f"Invalid value for 'rotation': {entry['rotation']}")
    prefix, sep, postfix = entry["aspect_ratio"].partition(":")  # [SRC] "W:H", digits
    if not (prefix.isdigit() and sep == ":" and postfix.isdigit()):
        raise MoonrakerError(f"Invalid value for 'aspect_ratio': {entry['aspect_ratio']}")


class _Handler(QuietHandler):
    moonraker: FakeMoonraker

    def serve(self) -> None:
        url = urlsplit(self.path)
        # [API] arguments come from the query string and the JSON body; the body wins.
        args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        status, payload = 200, None
        try:
            if length:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise MoonrakerError("Invalid JSON body")
                args.update(body)
            payload = {"result": self.moonraker.handle(self.command, url.path, args,
                                                       self.headers.get("X-Api-Key"))}  # [API] "result"
        except ValueError:
            status, payload = 400, {"error": {"code": 400, "message": "Invalid JSON body"}}
        except MoonrakerError as exc:  # [API] write_error: {"error": {"code", "message"}}
            status, payload = exc.code, {"error": {"code": exc.code, "message": str(exc)}}
        self.moonraker.requests.append((self.command, url.path, status))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


FakeMoonraker.handler = _Handler
