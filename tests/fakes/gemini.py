"""A fake of Gemini's generateContent REST endpoint: real HTTP on 127.0.0.1.

It checks each request the way the real service does what the tracker relies on — the path
`/v1beta/models/{model}:generateContent`, the `x-goog-api-key` header (a key in the URL is
recorded as a violation), an `inline_data` part whose base64 `data` is a JPEG with
`mime_type` image/jpeg, and `generationConfig.responseMimeType` = application/json with a
`responseSchema` — and answers like the real one:

- "ok":    200 with candidates[0].content.parts[0].text = JSON list of {label, box_2d}
- "429":   429 RESOURCE_EXHAUSTED, QuotaFailure (a per-minute quotaId) + RetryInfo retryDelay
- "daily": 429 RESOURCE_EXHAUSTED whose QuotaFailure names a PerDay quotaId
- "500":   500 INTERNAL;  "503": 503 UNAVAILABLE
- "slow":  the "ok" answer after `slow_s` seconds

`script` is a list of behaviours consumed one per request ("ok" once it is empty). Every
request is recorded in `requests`; `max_in_flight` is the most requests seen at once.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = re.compile(r"^/v1beta/models/(?P<model>[A-Za-z0-9.\-_]+):generateContent$")


@dataclass
class RecordedRequest:
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    behaviour: str
    problems: list[str] = field(default_factory=list)


def _error(code: int, status: str, message: str,
           details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def quota_error(quota_id: str, retry_delay: str | None) -> dict[str, Any]:
    """A 429 body as Gemini sends it (google.rpc.QuotaFailure, Help, RetryInfo)."""
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
            "quotaValue": "10"}]},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    ]
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return _error(429, "RESOURCE_EXHAUSTED",
                  "You exceeded your current quota, please check your plan and billing details.", details)


class FakeGemini:
    """The fake server; a context manager. `url` is its base_url."""

    def __init__(self, api_key: str = "test-key-123", *, objects: list[dict[str, Any]] | None = None,
                 retry_delay: str = "17s", slow_s: float = 2.0) -> None:
        self.api_key = api_key
        self.objects = objects if objects is not None else []
        self.retry_delay = retry_delay
        self.slow_s = slow_s
        self.script: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeGemini:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _next_behaviour(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else "ok"

    def _check(self, path: str, query: str, headers: dict[str, str], body: Any) -> list[str]:
        problems = []
        if not PATH.match(path):
            problems.append(f"path {path!r} is not /v1beta/models/<model>:generateContent")
        if "key=" in query:
            problems.append("API key in the URL")
        if headers.get("x-goog-api-key") != self.api_key:
            problems.append("x-goog-api-key header missing or wrong")
        try:
            parts = body["contents"][0]["parts"]
            inline = next(p["inline_data"] for p in parts if "inline_data" in p)
            if inline.get("mime_type") != "image/jpeg":
                problems.append("inline_data.mime_type is not image/jpeg")
            jpeg = base64.b64decode(inline["data"], validate=True)
            if not (jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"):
                problems.append("inline_data.data is not a JPEG")
            config = body["generationConfig"]
            if config.get("responseMimeType") != "application/json":
                problems.append("generationConfig.responseMimeType is not application/json")
            if not isinstance(config.get("responseSchema"), dict):
                problems.append("generationConfig.responseSchema missing")
            if not any(isinstance(p.get("text"), str) and p["text"] for p in parts):
                problems.append("no text prompt part")
        except (KeyError, IndexError, TypeError, StopIteration, ValueError) as exc:
            problems.append(f"body shape: {type(exc).__name__}: {exc}")
        return problems

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

            def do_POST(self) -> None:  # noqa: N802
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self._serve()
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                path, _, query = self.path.partition("?")
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                behaviour = fake._next_behaviour()
                problems = fake._check(path, query, headers, body)
                fake.requests.append(RecordedRequest(path, query, headers, body, behaviour, problems))
                if problems:
                    if "x-goog-api-key header missing or wrong" in problems:
                        return self._send(400, _error(400, "INVALID_ARGUMENT",
                                                      "API key not valid. Please pass a valid API key."))
                    return self._send(400, _error(400, "INVALID_ARGUMENT", "; ".join(problems)))
                if behaviour == "429":
                    return self._send(429, quota_error("GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                                                       fake.retry_delay))
                if behaviour == "daily":
                    return self._send(429, quota_error("GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                                                       None))
                if behaviour == "500":
                    return self._send(500, _error(500, "INTERNAL", "An internal error has occurred."))
                if behaviour == "503":
                    return self._send(503, _error(503, "UNAVAILABLE", "The model is overloaded."))
                if behaviour == "slow":
                    time.sleep(fake.slow_s)
                answer = {
                    "candidates": [{"content": {"parts": [{"text": json.dumps(fake.objects)}],
                                                "role": "model"},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 40},
                    "modelVersion": PATH.match(path).group("model"),
                }
                self._send(200, answer)

            def _send(self, code: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler
