"""The `gemini` detector: a Gemini model asked for labelled boxes in one JPEG.

Request (REST, generateContent, https://ai.google.dev/api/generate-content):

    POST {base_url}/v1beta/models/{model}:generateContent
    x-goog-api-key: <key>                       (a header: never in the URL, never logged)
    {"contents": [{"parts": [{"inline_data": {"mime_type": "image/jpeg", "data": <base64>}},
                             {"text": <prompt>}]}],
     "generationConfig": {"responseMimeType": "application/json", "responseSchema": {...},
                          "thinkingConfig": {...}}}

The answer's text is a JSON list of {"label", "box_2d", "confidence"?}, where box_2d is
Gemini's own convention: [ymin, xmin, ymax, xmax] normalised to 0-1000 (corners given the other
way round are put back in order). It is converted to pixels with the frame's real size.

The request is prepared first and leaves only when the camera's gate (`CameraGate.reserve`)
says so. Answers, as the service gives them today
(https://ai.google.dev/gemini-api/docs/troubleshooting):

- 200: the boxes; a blocked prompt (`promptFeedback.blockReason`) or an answer that did not
  finish (`finishReason` other than STOP) is an unusable answer, counted, not retried sooner;
- 429 with a per-day QuotaFailure: every camera pauses until midnight Pacific; with RetryInfo:
  every camera pauses for its `retryDelay`; a bare 429: backoff, as for 5xx and timeouts;
- 400 / 403 / 404: permanent for this camera (retrying cannot help) — its status says what to
  fix (a retired model names `tracker.gemini.model`);
- a redirect (3xx): never followed, permanent as well — the key goes to `base_url` only, and a
  loopback `base_url` is reached directly, whatever proxy the environment names
  (`subscribers/egress.py`).

Error text from the service may echo the key: it is scrubbed before it is logged or published.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import requests

from ....runtime.clock import SYSTEM_CLOCK, Clock
from ....runtime.errors import CamfabricError
from ....runtime.logonce import LogOnce
from ...egress import redirect_target, secret_session
from ..budget import RequestBudget
from ..config import DEFAULT_MODEL, GeminiConfig
from . import Detection, DetectionSkipped

PROMPT = ("Detect the objects in this image{which}. Return a JSON list with one entry per object: "
          '"label" (the object name), "box_2d" as [ymin, xmin, ymax, xmax] normalised to 0-1000, '
          'and "confidence" from 0 to 1.')
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
# Google API keys ("AIza" + 35 characters), however a server's message happens to quote them.
_API_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
LATENCY_GUESS_S = 10.0  # until measured: realistic for an image request to a Gemini model


class GeminiError(CamfabricError):
    """An answer from Gemini that is not a usable detection list (logged, counted)."""


class GeminiRefused(GeminiError):
    """A 400/403/404: this camera stops calling until the configuration is fixed."""


def scrub(text: str, secret: str) -> str:
    """`text` with the key (and anything shaped like a Google API key) replaced."""
    if secret:
        text = text.replace(secret, "[key]")
    return _API_KEY.sub("[key]", text)


def thinking_config(model: str) -> dict[str, Any] | None:
    """The least thinking `model` allows (thinking is slower and billed), or None to leave
    the model's default: Gemini 2.5 Flash / Flash-Lite accept thinkingBudget 0 (2.5 Pro cannot
    turn thinking off); Gemini 3 models take a thinkingLevel instead, "minimal" on Flash and
    Flash-Lite, "low" on Pro (https://ai.google.dev/gemini-api/docs/thinking)."""
    name = model.lower()
    if name.startswith("gemini-2.5-flash"):
        return {"thinkingBudget": 0}
    if name.startswith("gemini-3"):
        return {"thinkingLevel": "low" if "pro" in name else "minimal"}
    return None


def response_schema(labels: Sequence[str]) -> dict[str, Any]:
    """The OpenAPI-subset schema of the answer; `label` restricted to `labels` when known."""
    label: dict[str, Any] = {"type": "STRING"}
    if labels:
        label["enum"] = list(labels)
    return {
        "type": "ARRAY",
        "items": {
            "type": "OBJECT",
            "properties": {
                "label": label,
                "box_2d": {"type": "ARRAY", "items": {"type": "INTEGER"}, "minItems": 4, "maxItems": 4},
                "confidence": {"type": "NUMBER"},
            },
            "required": ["label", "box_2d"],
        },
    }


class GeminiDetector:
    """Asks a Gemini model for boxes; one call at a time per instance (one per camera)."""

    kind = "gemini"
    remote = True

    def __init__(self, config: GeminiConfig, api_key: str, budget: RequestBudget, *,
                 labels: Sequence[str] = (), session: requests.Session | None = None,
                 clock: Clock = SYSTEM_CLOCK, log: logging.Logger | None = None) -> None:
        self.config = config
        self._key = api_key
        self.budget = budget
        self.labels = list(labels)
        # Never a redirect, never an environment proxy towards loopback: the key goes to
        # base_url and nowhere else (subscribers/egress.py).
        self.session = secret_session(config.base_url, session)
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        self.url = f"{config.base_url.rstrip('/')}/v1beta/models/{config.model}:generateContent"
        self.calls = 0
        self.failures = 0
        self.last_error = ""
        self.refused = ""  # set by a 400/403/404: what to fix
        self._latencies: collections.deque[float] = collections.deque(maxlen=20)
        self._failures = LogOnce(self.log)

    def __repr__(self) -> str:  # never the key
        return f"GeminiDetector(model={self.config.model!r}, url={self.url!r})"

    @property
    def latency_s(self) -> float:
        """The slowest of the last answers (seconds), or a realistic guess before any."""
        return max(self._latencies) if self._latencies else LATENCY_GUESS_S

    def request_body(self, jpeg: bytes) -> dict[str, Any]:
        """The generateContent body for one JPEG."""
        which = f" (look for: {', '.join(self.labels)})" if self.labels else ""
        prompt = PROMPT.format(which=which)
        if self.config.prompt:
            prompt = f"{prompt} {self.config.prompt}"
        generation: dict[str, Any] = {"responseMimeType": "application/json",
                                      "responseSchema": response_schema(self.labels)}
        thinking = thinking_config(self.config.model)
        if thinking:
            generation["thinkingConfig"] = thinking
        return {
            "contents": [{"parts": [
                {"inline_data": {"mime_type": "image/jpeg", "data": base64.b64encode(jpeg).decode("ascii")}},
                {"text": prompt},
            ]}],
            "generationConfig": generation,
        }

    def detect(self, jpeg: bytes, width: int, height: int, gate: Any) -> list[Detection]:
        """The objects Gemini sees in `jpeg` (a `width` x `height` frame), in pixels.

        `gate` is the camera's `CameraGate`. Raises DetectionSkipped when the request may not go
        now or failed (the budget then holds every camera back as the answer asks), GeminiError
        for an answer that cannot be used, GeminiRefused when this camera must stop calling.
        """
        if self.refused:
            raise GeminiRefused(self.refused)
        prepared = self.session.prepare_request(requests.Request(
            "POST", self.url, data=json.dumps(self.request_body(jpeg)),
            headers={"x-goog-api-key": self._key, "Content-Type": "application/json"}))
        wait = gate.reserve()
        if wait:
            raise DetectionSkipped("request budget", self.clock.monotonic() + wait)
        sent_at = self.clock.monotonic()
        self.calls += 1
        try:
            try:
                response = self.session.send(prepared, timeout=self.config.timeout_s,
                                             allow_redirects=False)
            except requests.RequestException as exc:
                backoff = self.budget.on_failure(sent_at, type(exc).__name__)
                self._failed("transport", f"Gemini request failed ({type(exc).__name__}); every "
                             f"camera backs off {backoff:.1f} s")
                raise DetectionSkipped("request failed", self.clock.monotonic() + backoff) from None
            self._latencies.append(self.clock.monotonic() - sent_at)
            return self.to_detections(self._answer(response, sent_at), width, height)
        finally:
            gate.done()

    def _answer(self, response: requests.Response, sent_at: float) -> list[Any]:
        status = response.status_code
        body = _json(response)
        if status == 429:
            if _is_daily_quota(body):
                wait = self.budget.on_daily_exhausted()
                self._failed("daily", "Gemini daily quota exhausted: no more calls until it resets at "
                             "midnight Pacific time (tracker.gemini.requests_per_day)")
                raise DetectionSkipped("daily quota exhausted", self.clock.monotonic() + wait)
            delay = _retry_delay(body)
            if delay is not None:
                self.budget.on_rate_limited(delay)
                self._failed("429", f"Gemini rate limit (429 RESOURCE_EXHAUSTED): every camera waits "
                             f"{delay:g} s")
                raise DetectionSkipped("rate limited", self.clock.monotonic() + delay)
            wait = self.budget.on_failure(sent_at, "HTTP 429", _retry_after(response))
            self._failed("429-bare", f"Gemini answered 429 without a retry delay: every camera "
                         f"backs off {wait:.1f} s")
            raise DetectionSkipped("rate limited", self.clock.monotonic() + wait)
        if status >= 500 or status == 408:
            wait = self.budget.on_failure(sent_at, f"HTTP {status}", _retry_after(response))
            self._failed(f"http{status}", f"Gemini answered HTTP {status} {_error_message(body)}; "
                         f"every camera backs off {wait:.1f} s")
            raise DetectionSkipped(f"HTTP {status}", self.clock.monotonic() + wait)
        if 300 <= status < 400:
            self.refused = scrub(
                f"Gemini at {self.url} answered HTTP {status}, a redirect to "
                f"{redirect_target(response, self._key)}: not followed (the API key goes to "
                f"tracker.gemini.base_url only); set tracker.gemini.base_url to the API's own "
                f"address", self._key)
            self._failed("redirect", self.refused)
            raise GeminiRefused(self.refused)
        if status != 200:
            self.refused = scrub(self._what_to_fix(status, body), self._key)
            self._failed("refused", self.refused)
            raise GeminiRefused(self.refused)
        if self.budget.on_success(sent_at) or self._failures.recovered():
            self.log.info("Gemini calls succeed again")
        self.last_error = ""
        return self._parse(body)

    def _what_to_fix(self, status: int, body: Any) -> str:
        message = _error_message(body)
        reasons = {d.get("reason") for d in _details(body)}
        if status == 404:
            return (f"Gemini has no model {self.config.model!r} (HTTP 404 {message}): it is retired or "
                    f"misspelt; set tracker.gemini.model to a current model such as {DEFAULT_MODEL!r}")
        if status in (401, 403) or "API_KEY_INVALID" in reasons:
            return (f"Gemini refused the API key (HTTP {status} {message}): set a valid key in "
                    f"{self.config.api_key_env} or tracker.gemini.api_key, with the Generative "
                    f"Language API enabled for its project")
        if "FAILED_PRECONDITION" in message:
            return (f"Gemini refused the request (HTTP {status} {message}): the free tier is not "
                    f"available here; enable billing for the key's project")
        return (f"Gemini refused the request as invalid (HTTP {status} {message}): check "
                f"tracker.gemini.model and tracker.gemini.prompt")

    def _parse(self, body: Any) -> list[Any]:
        if not isinstance(body, dict):
            raise self._unusable("parse", "Gemini answer is not a JSON object")
        feedback = body.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            raise self._unusable("blocked", f"Gemini blocked the prompt ({feedback['blockReason']})")
        try:
            candidate = body["candidates"][0]
            finish = candidate.get("finishReason", "STOP")
            if finish != "STOP":
                raise self._unusable("finish", f"Gemini's answer did not finish ({finish})")
            text = "".join(p.get("text", "") for p in candidate["content"]["parts"])
            items = json.loads(text)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise self._unusable("parse", f"Gemini answer is not a JSON detection list "
                                 f"({type(exc).__name__})") from None
        if not isinstance(items, list):
            raise self._unusable("parse", "Gemini answer is not a JSON list")
        return items

    def to_detections(self, items: list[Any], width: int, height: int) -> list[Detection]:
        """Gemini's box_2d items ([ymin, xmin, ymax, xmax] in 0-1000) as pixel detections."""
        out = []
        for item in items:
            box = item.get("box_2d") if isinstance(item, dict) else None
            label = item.get("label") if isinstance(item, dict) else None
            if (not isinstance(label, str) or not isinstance(box, list) or len(box) != 4
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)):
                self._failed("item", "Gemini returned an item without a label and a 4-number box_2d")
                continue
            ya, xa, yb, xb = (min(1000.0, max(0.0, float(v))) for v in box)
            ymin, ymax = sorted((ya, yb))  # corners given the other way round
            xmin, xmax = sorted((xa, xb))
            x0, x1 = xmin * width / 1000.0, xmax * width / 1000.0
            y0, y1 = ymin * height / 1000.0, ymax * height / 1000.0
            confidence = item.get("confidence", 1.0)
            if not isinstance(confidence, int | float):
                confidence = 1.0
            out.append(Detection(label=label.strip(), pixel=((x0 + x1) / 2, (y0 + y1) / 2),
                                 confidence=min(1.0, max(0.0, float(confidence))),
                                 box=(x0, y0, x1, y1)))
        return out

    def _unusable(self, kind: str, message: str) -> GeminiError:
        self._failed(kind, message)
        return GeminiError(self.last_error)

    def _failed(self, kind: str, message: str) -> None:
        self.failures += 1
        self.last_error = scrub(message, self._key)
        self._failures.warning(kind, "%s (further ones are counted, not logged)", self.last_error)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def _details(body: Any) -> list[dict[str, Any]]:
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _is_daily_quota(body: Any) -> bool:
    """True when a 429's QuotaFailure names a per-day quota (e.g. ...RequestsPerDay...)."""
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                    return True
    return False


def _retry_delay(body: Any) -> float | None:
    """Seconds from google.rpc.RetryInfo's retryDelay ("17s"), or None when the 429 has none."""
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def _error_message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('status', '')}: {str(error.get('message', ''))[:200]}"
    return ""
