"""The HTTP contract with Prusa Connect's camera API, and nothing else.

    PUT {server}/c/snapshot   Token, Fingerprint, Content-Type: image/jpg, body = one JPEG
    PUT {server}/c/info       Token, Fingerprint, JSON {"config": {"name", "resolution", ...}}

Success is any 2xx (the spec says 204; the live service has answered 200 with JSON). Every
failure becomes one of our errors, classified by what the caller should do about it:

    ConnectError
    ├── TransientError        5xx, 429, 408, timeouts, network/DNS failures: back off, retry
    │                         (`retry_after` carries the server's Retry-After, in seconds)
    ├── PermanentError        will fail the same way until the user acts: stop this camera
    │   ├── TokenRejected     401/403 — token missing, wrong or revoked
    │   └── FingerprintRejected  400 "Invalid fingerprint" — token bound to another fingerprint
    └── RequestRejected       any other 4xx (bad image, too large, 404): this request is bad

The token travels in a header only — never in a URL — and no message built here contains it.
It goes to `server` and nowhere else: a redirect is never followed (it is a RequestRejected
naming the URL), and a loopback server is reached directly whatever proxy the environment
names (`subscribers/egress.py`).
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from ...runtime.errors import CamfabricError
from ..egress import redirect_target, secret_session

SNAPSHOT_PATH = "/c/snapshot"
INFO_PATH = "/c/info"
MAX_RETRY_AFTER_S = 3600.0

log = logging.getLogger(__name__)


class ConnectError(CamfabricError):
    """A Connect request that did not succeed. `status` is the HTTP status, 0 without one."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class TransientError(ConnectError):
    """Worth retrying later: the server or the network failed, not the request."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class PermanentError(ConnectError):
    """Fails the same way until the user changes something; `action` says what."""

    action = ""


class TokenRejected(PermanentError):
    action = ("the camera token is missing, wrong or was revoked (or is bound to another device): in "
              "Prusa Connect open the printer's Camera tab, regenerate the token (or re-add the camera "
              "with 'Add new other camera'), put the new token in the config and reload "
              "(systemctl reload, or SIGHUP)")


class FingerprintRejected(PermanentError):
    action = ("Connect bound this token to a different fingerprint (another device or an older "
              "install used it): re-add the camera in Prusa Connect ('Add new other camera'), put "
              "the new token in the config and reload — or restore the old fingerprint state file")


class RequestRejected(ConnectError):
    """Connect refused this one request (bad data, too large, unknown path)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: its status and, when Connect sent one, its JSON body."""

    status: int
    body: Any = None


class ConnectClient:
    """Talks to one Connect server through an injected `requests.Session`."""

    def __init__(self, server: str, timeout_s: float = 10.0, session: requests.Session | None = None,
                 *, user_agent: str = "camfabric") -> None:
        self.server = server.rstrip("/")
        self.timeout_s = timeout_s
        # Never a redirect, never an environment proxy towards loopback (subscribers/egress.py).
        self.session = secret_session(self.server, session)
        self.user_agent = user_agent

    def put_snapshot(self, token: str, fingerprint: str, jpeg: bytes) -> Reply:
        """Upload one JPEG as the camera's current snapshot."""
        headers = {"Content-Type": "image/jpg"}
        return self._put(SNAPSHOT_PATH, token, fingerprint, bytes(jpeg), headers)

    def put_info(self, token: str, fingerprint: str, config: dict[str, Any]) -> Reply:
        """Tell Connect the camera's configuration (name, resolution, ...)."""
        body = json.dumps({"config": config}).encode("utf-8")
        return self._put(INFO_PATH, token, fingerprint, body, {"Content-Type": "application/json"})

    def close(self) -> None:
        self.session.close()

    def _put(self, path: str, token: str, fingerprint: str, body: bytes,
             headers: dict[str, str]) -> Reply:
        url = self.server + path
        headers = {**headers, "Token": token, "Fingerprint": fingerprint,
                   "Content-Length": str(len(body)), "User-Agent": self.user_agent}
        try:
            response = self.session.put(url, data=body, headers=headers, timeout=self.timeout_s,
                                        allow_redirects=False)
        except requests.Timeout as exc:
            raise TransientError(f"PUT {path}: no answer within {self.timeout_s:g} s") from _scrub(exc, token)
        except requests.ConnectionError as exc:
            raise TransientError(f"PUT {path}: cannot reach {self.server}: {_reason(exc, token)}") \
                from _scrub(exc, token)
        except requests.RequestException as exc:
            raise TransientError(f"PUT {path}: {_reason(exc, token)}") from _scrub(exc, token)
        with response:
            return self._interpret(path, response, token)

    def _interpret(self, path: str, response: requests.Response, token: str) -> Reply:
        status = response.status_code
        if 200 <= status < 300:
            return Reply(status, _json_or_none(response))
        detail = _detail(response, token)
        what = f"PUT {path} answered {status}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            raise TokenRejected(what, status)
        if status == 400 and "fingerprint" in detail.lower():
            raise FingerprintRejected(what, status)
        if status == 429 or status == 408 or status >= 500:
            raise TransientError(what, status, parse_retry_after(response.headers.get("Retry-After")))
        if 300 <= status < 400:
            raise RequestRejected(
                f"PUT {response.url} answered {status}, a redirect to "
                f"{redirect_target(response, token)}: not followed (the token goes to "
                f"prusa_connect.server only); check prusa_connect.server", status)
        if status == 404:
            raise RequestRejected(f"{what} (check prusa_connect.server = {self.server})", status)
        raise RequestRejected(what, status)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped at 1 h."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _json_or_none(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _detail(response: requests.Response, token: str) -> str:
    """A short reason from an error body: Connect answers JSON {"message": ...} or text."""
    text = response.text[:500] if response.content else ""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "detail", "title", "error", "description"):
            if isinstance(data.get(key), str):
                text = data[key]
                break
    text = " ".join(text.split())[:200]
    return text.replace(token, "<token>") if token else text


def _reason(exc: BaseException, token: str) -> str:
    reason = str(exc) or type(exc).__name__
    return reason.replace(token, "<token>") if token else reason


def _scrub(exc: BaseException, token: str) -> BaseException:
    """`exc` with its request and response dropped, so no traceback can reach the headers."""
    if isinstance(exc, requests.RequestException):
        exc.request = None
        exc.response = None
    if token and token in str(exc):
        return ConnectError(_reason(exc, token))
    return exc
