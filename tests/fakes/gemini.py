"""A strict fake of Gemini's generateContent REST endpoint: real HTTP on 127.0.0.1.

Written from Google's published contract, not from our client. Each rule cites its source:

[API]    https://ai.google.dev/api/generate-content — the request (GenerateContentRequest, Content,
         Part, Blob, GenerationConfig, ThinkingConfig) and the response (candidates, finishReason,
         promptFeedback.blockReason, usageMetadata).
[SCHEMA] https://ai.google.dev/api/caching#Schema — responseSchema, an OpenAPI subset: its fields
         and Type values (STRING, NUMBER, INTEGER, BOOLEAN, ARRAY, OBJECT, NULL).
[JSON]   https://protobuf.dev/programming-guides/json/ — the request is proto3 JSON: parsers
         accept both the lowerCamelCase and the original snake_case field name, and reject
         unknown fields ("Invalid JSON payload received. Unknown name ...").
[KEYS]   https://ai.google.dev/gemini-api/docs/api-key — the key travels in `x-goog-api-key`
         (a `key=` query parameter is also accepted; we record it as a violation).
[ERRORS] https://ai.google.dev/gemini-api/docs/troubleshooting — 400 INVALID_ARGUMENT /
         FAILED_PRECONDITION, 403 PERMISSION_DENIED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED,
         500 INTERNAL, 503 UNAVAILABLE ("The model is overloaded"), 504 DEADLINE_EXCEEDED.
[LIMITS] https://ai.google.dev/gemini-api/docs/rate-limits — limits are per project, not per
         key; requests per day reset at midnight Pacific time. Minute limits are fixed windows
         that reset at second 00 (https://discuss.ai.google.dev/t/api-rate-limit-reset/6851).
         A 429 carries google.rpc.QuotaFailure (the quotaId says per minute or per day) and
         RetryInfo (https://dev.to/cynora/gemini-api-free-tier-429-per-minute-vs-per-day-limits-
         measured-on-four-models-mpc); a daily 429 carries a short retryDelay too, which is
         useless until the reset.
[THINK]  https://ai.google.dev/gemini-api/docs/thinking — thinkingBudget and thinkingLevel are
         exclusive; 2.5 Pro cannot turn thinking off (budget 0); Gemini 2.5 takes no level.
[MODELS] https://ai.google.dev/gemini-api/docs/deprecations — a retired model is gone: 404.

`script` is a list of behaviours consumed one per request ("ok" once it is empty): "ok",
"429" (per-minute, RetryInfo `retry_delay`), "daily", "bare429", "500", "503", "504", "blocked",
"max_tokens", "swapped" (box corners given max first), "slow" (the "ok" answer after `slow_s`),
"echo" (a 500 whose message quotes the key). Every request is recorded in `requests` with its
arrival time on the fake's own clock; `max_in_flight` is the most requests seen at once.

`connect_s` plays the network, not the API: a new connection's set-up (TCP and TLS to Google's
front end, one or two round trips) delays its first request by this much, while a request on a
kept-alive connection arrives at once — so a request can reach the server later after leaving
the client than the next one does.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

PATH = re.compile(r"^/v1beta/models/(?P<model>[A-Za-z0-9.\-_]+):generateContent$")
PACIFIC = ZoneInfo("America/Los_Angeles")
MODELS = frozenset({"gemini-3.5-flash-lite", "gemini-3.5-flash", "gemini-3.8-flash",
                    "gemini-3.1-flash-lite", "gemini-3.1-pro-preview", "gemini-2.5-flash-lite"})
RETIRED = frozenset({"gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-1.5-flash"})
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
INLINE_LIMIT = 20 * 1024 * 1024  # [API] inline data: the whole request under 20 MB

# [API] message fields, by their lowerCamelCase names; [JSON] snake_case is accepted too.
FIELDS: dict[str, dict[str, str | None]] = {
    "Request": {"contents": "Content[]", "generationConfig": "GenerationConfig",
                "systemInstruction": "Content", "safetySettings": None, "tools": None,
                "toolConfig": None, "cachedContent": None, "model": None},
    "Content": {"parts": "Part[]", "role": None},
    "Part": {"text": None, "inlineData": "Blob", "fileData": None, "thought": None,
             "thoughtSignature": None, "videoMetadata": None, "functionCall": None,
             "functionResponse": None, "executableCode": None, "codeExecutionResult": None},
    "Blob": {"mimeType": None, "data": None},
    "GenerationConfig": {"stopSequences": None, "responseMimeType": None, "responseSchema": "Schema",
                         "responseJsonSchema": None, "responseModalities": None, "candidateCount": None,
                         "maxOutputTokens": None, "temperature": None, "topP": None, "topK": None,
                         "seed": None, "presencePenalty": None, "frequencyPenalty": None,
                         "responseLogprobs": None, "logprobs": None, "thinkingConfig": "ThinkingConfig",
                         "mediaResolution": None, "speechConfig": None},
    "ThinkingConfig": {"includeThoughts": None, "thinkingBudget": None, "thinkingLevel": None},
    "Schema": {"type": None, "format": None, "title": None, "description": None, "nullable": None,
               "enum": None, "maxItems": None, "minItems": None, "properties": "Schema{}",
               "required": None, "minProperties": None, "maxProperties": None, "minLength": None,
               "maxLength": None, "pattern": None, "example": None, "anyOf": "Schema[]",
               "propertyOrdering": None, "default": None, "items": "Schema", "minimum": None,
               "maximum": None},
}
SCHEMA_TYPES = frozenset({"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY",
                          "OBJECT", "NULL"})
THINKING_LEVELS = frozenset({"MINIMAL", "LOW", "MEDIUM", "HIGH", "minimal", "low", "medium", "high"})


class BadRequest(Exception):
    """A request the real service answers with 400 INVALID_ARGUMENT."""


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def normalise(value: Any, message: str, where: str) -> Any:
    """`value` as message `message` with every field under its camelCase name ([JSON]); an
    unknown field raises BadRequest as the service words it."""
    if message.endswith("[]"):
        if not isinstance(value, list):
            raise BadRequest(f"Invalid value at '{where}', expected a list")
        return [normalise(v, message[:-2], f"{where}[{i}]") for i, v in enumerate(value)]
    if message.endswith("{}"):
        if not isinstance(value, dict):
            raise BadRequest(f"Invalid value at '{where}', expected an object")
        return {k: normalise(v, message[:-2], f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid value at '{where}' ({message}), expected an object")
    fields = FIELDS[message]
    by_name = {**{_snake(f): f for f in fields}, **{f: f for f in fields}}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = by_name.get(key)
        if name is None:
            raise BadRequest(f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                             "Cannot find field.")
        if name in out:
            raise BadRequest(f"Invalid JSON payload received. Duplicate field \"{key}\" at '{where}'.")
        kind = fields[name]
        out[name] = normalise(item, kind, f"{where}.{_snake(name)}") if kind else item
    return out


def check_schema(schema: dict[str, Any], where: str) -> None:
    """[SCHEMA] rules the service enforces on responseSchema."""
    kind = schema.get("type")
    if kind not in SCHEMA_TYPES:
        raise BadRequest(f"* {where}.type: Invalid value {kind!r} (TYPE_UNSPECIFIED, STRING, NUMBER, "
                         "INTEGER, BOOLEAN, ARRAY, OBJECT, NULL)")
    if "enum" in schema:
        if kind != "STRING":
            raise BadRequest(f"* {where}.enum: only allowed for STRING type")
        if not isinstance(schema["enum"], list) or not all(isinstance(e, str) for e in schema["enum"]):
            raise BadRequest(f"* {where}.enum: must be a list of strings")
    if kind == "ARRAY":
        if "items" not in schema:
            raise BadRequest(f"* {where}.items: missing field.")
        check_schema(schema["items"], f"{where}.items")
    if kind == "OBJECT":
        properties = schema.get("properties") or {}
        if not properties:
            raise BadRequest(f"* {where}.properties: should be non-empty for OBJECT type")
        for name, sub in properties.items():
            check_schema(sub, f"{where}.properties[{name}]")
        for name in schema.get("required") or []:
            if name not in properties:
                raise BadRequest(f"* {where}.required[{name}]: property is not defined")
    for key in ("minItems", "maxItems"):
        if key in schema and not str(schema[key]).isdigit():
            raise BadRequest(f"* {where}.{_snake(key)}: expected an integer")


@dataclass
class RecordedRequest:
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    behaviour: str
    at: float  # arrival, on the fake's monotonic clock
    wall: float
    status: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        match = PATH.match(self.path)
        return match.group("model") if match else ""


def _error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def quota_error(quota_id: str, retry_delay: str | None, model: str = "gemini-3.5-flash-lite",
                value: int = 10) -> dict[str, Any]:
    """[LIMITS] A 429 body as Gemini sends it (QuotaFailure, Help, RetryInfo)."""
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": model},
            "quotaValue": str(value)}]},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    ]
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return _error(429, "RESOURCE_EXHAUSTED",
                  "You exceeded your current quota, please check your plan and billing details.", details)


class _RealClock:
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


class FakeGemini:
    """The fake server; a context manager. `url` is its base_url.

    `per_minute` / `per_day` (None: unlimited) are the project's limits, enforced by the fake
    itself on its own `clock` (another host's: real time unless a test passes one).
    """

    def __init__(self, api_key: str = "test-key-123", *, objects: list[dict[str, Any]] | None = None,
                 retry_delay: str = "17s", slow_s: float = 2.0, per_minute: int | None = None,
                 per_day: int | None = None, clock: Any = None, connect_s: float = 0.0) -> None:
        self.api_key = api_key
        self.connect_s = connect_s
        self.objects = objects if objects is not None else []
        self.retry_delay = retry_delay
        self.slow_s = slow_s
        self.per_minute = per_minute
        self.per_day = per_day
        self.clock = clock or _RealClock()
        self.script: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._minute: tuple[int, int] = (-1, 0)  # (window, count) per fixed minute
        self._day: tuple[str, int] = ("", 0)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
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

    def wait_calls(self, n: int, timeout: float) -> bool:
        """True once `n` requests have arrived; False if `timeout` (real seconds) passed first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.requests) >= n, timeout)

    def answered(self, status: int = 200) -> list[RecordedRequest]:
        return [r for r in self.requests if r.status == status]

    def _next_behaviour(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else "ok"

    # -- the contract ------------------------------------------------------------------------------
    def _validate(self, model: str, body: Any) -> dict[str, Any]:
        """The request as the service reads it; BadRequest for what it refuses."""
        if not isinstance(body, dict):
            raise BadRequest("Invalid JSON payload received.")
        request = normalise(body, "Request", "")
        contents = request.get("contents")
        if not contents:
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
        size = 0
        for i, content in enumerate(contents):
            if not content.get("parts"):
                raise BadRequest(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must "
                                 "not be empty.")
            for part in content["parts"]:
                inline = part.get("inlineData")
                if inline is None:
                    continue
                if inline.get("mimeType") not in IMAGE_TYPES:
                    raise BadRequest(f"Unsupported MIME type: {inline.get('mimeType')}")
                try:
                    data = base64.b64decode(inline.get("data", ""), validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise BadRequest("Invalid value at 'contents[0].parts[0].inline_data.data' "
                                     "(TYPE_BYTES), Base64 decoding failed") from None
                size += len(data)
                jpeg = data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
                if inline["mimeType"] == "image/jpeg" and not jpeg:
                    raise BadRequest("Unable to process input image. Please retry or report in "
                                     "https://developers.generativeai.google/guide/troubleshooting")
        if size > INLINE_LIMIT:
            raise BadRequest("Request payload size exceeds the limit: 20971520 bytes.")
        config = request.get("generationConfig") or {}
        schema = config.get("responseSchema")
        if schema is not None:
            if config.get("responseMimeType") not in ("application/json", "text/x.enum"):
                raise BadRequest("* GenerateContentRequest.generation_config.response_mime_type: "
                                 "response_schema requires response_mime_type application/json")
            check_schema(schema, "GenerateContentRequest.generation_config.response_schema")
        thinking = config.get("thinkingConfig") or {}
        if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
            raise BadRequest("Thinking budget and thinking level cannot both be set.")
        if "thinkingLevel" in thinking:
            if thinking["thinkingLevel"] not in THINKING_LEVELS:
                raise BadRequest(f"Invalid value at 'generation_config.thinking_config.thinking_level' "
                                 f"(type.googleapis.com/google.ai.generativelanguage.v1beta.ThinkingConfig"
                                 f".ThinkingLevel), \"{thinking['thinkingLevel']}\"")
            if model.startswith("gemini-2."):
                raise BadRequest("Thinking level is not supported for this model.")
        if thinking.get("thinkingBudget") == 0 and "pro" in model:
            raise BadRequest("Budget 0 is invalid. This model only works in thinking mode.")
        return request

    def _quota(self, model: str) -> tuple[int, dict[str, Any]] | None:
        """[LIMITS] The project's own limits: a fixed minute window, a Pacific day."""
        wall = self.clock.wall()
        with self._lock:
            window = math.floor(wall / 60.0)
            minute = self._minute if self._minute[0] == window else (window, 0)
            day_key = dt.datetime.fromtimestamp(wall, PACIFIC).date().isoformat()
            day = self._day if self._day[0] == day_key else (day_key, 0)
            if self.per_day is not None and day[1] >= self.per_day:
                return 429, quota_error("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "37s",
                                        model, self.per_day)
            if self.per_minute is not None and minute[1] >= self.per_minute:
                delay = max(1, math.ceil((window + 1) * 60.0 - wall))
                return 429, quota_error("GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                                        f"{delay}s", model, self.per_minute)
            self._minute = (window, minute[1] + 1)
            self._day = (day_key, day[1] + 1)
        return None

    def _answer(self, request: RecordedRequest, raw_body: Any) -> tuple[int, dict[str, Any]]:
        query = parse_qs(request.query)
        key = request.headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
        if "key" in query:
            request.problems.append("API key in the URL")
        match = PATH.match(request.path)
        if not match:
            return 404, _error(404, "NOT_FOUND", f"Requested entity was not found: {request.path}")
        if not key:
            return 403, _error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers "
                               "(callers without established identity). Please use API Key or other "
                               "form of API consumer identity to call this API.")
        if key != self.api_key:
            return 400, _error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                               [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                 "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                                 "metadata": {"service": "generativelanguage.googleapis.com"}}])
        model = match.group("model")
        if model in RETIRED or model not in MODELS:
            return 404, _error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, "
                               "or is not supported for generateContent. Call ListModels to see the "
                               "list of available models and their supported methods.")
        try:
            self._validate(model, raw_body)
        except BadRequest as exc:
            request.problems.append(str(exc))
            return 400, _error(400, "INVALID_ARGUMENT", str(exc))
        quota = self._quota(model)
        if quota is not None:
            return quota
        behaviour = request.behaviour
        if behaviour == "429":
            return 429, quota_error("GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                                    self.retry_delay, model)
        if behaviour == "daily":
            return 429, quota_error("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "37s", model)
        if behaviour == "bare429":
            return 429, _error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
        if behaviour == "500":
            return 500, _error(500, "INTERNAL", "An internal error has occurred. Please retry or report "
                               "in https://developers.generativeai.google/guide/troubleshooting")
        if behaviour == "503":
            return 503, _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if behaviour == "504":
            return 504, _error(504, "DEADLINE_EXCEEDED", "Deadline exceeded.")
        if behaviour == "echo":
            return 500, _error(500, "INTERNAL", f"backend failed for request with key={key}")
        if behaviour == "blocked":  # [API] promptFeedback.blockReason, no candidates
            return 200, {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                         "usageMetadata": {"promptTokenCount": 300}, "modelVersion": model}
        if behaviour == "slow":
            time.sleep(self.slow_s)
        objects = self.objects
        if behaviour == "swapped":
            objects = [{**o, "box_2d": [o["box_2d"][2], o["box_2d"][3], o["box_2d"][0], o["box_2d"][1]]}
                       for o in objects]
        text = json.dumps(objects)
        finish = "STOP"
        if behaviour == "max_tokens":
            text, finish = text[: len(text) // 2], "MAX_TOKENS"
        return 200, {
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                            "finishReason": finish, "index": 0}],
            "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 40, "totalTokenCount": 340},
            "modelVersion": model, "responseId": f"fake-{len(self.requests)}",
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

            def setup(self) -> None:
                super().setup()
                if fake.connect_s:  # the connection's set-up, before its first request arrives
                    time.sleep(fake.connect_s)

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
                at, wall = fake.clock.monotonic(), fake.clock.wall()
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                path, _, query = self.path.partition("?")
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                recorded = RecordedRequest(path, query, headers, body, fake._next_behaviour(), at, wall)
                with fake._arrived:
                    fake.requests.append(recorded)
                    fake._arrived.notify_all()
                code, payload = fake._answer(recorded, body)
                recorded.status = code
                self._send(code, payload)

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
