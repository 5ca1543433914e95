"""The `gemini` detector: a Gemini model asked for labelled boxes in one JPEG.

Request (REST, generateContent):

    POST {base_url}/v1beta/models/{model}:generateContent
    x-goog-api-key: <key>                       (a header: never in the URL, never logged)
    {"contents": [{"parts": [{"inline_data": {"mime_type": "image/jpeg", "data": <base64>}},
                             {"text": <prompt>}]}],
     "generationConfig": {"responseMimeType": "application/json", "responseSchema": {...}}}

The answer's text is a JSON list of {"label", "box_2d", "confidence"?}, where box_2d is
Gemini's own convention: [ymin, xmin, ymax, xmax] normalised to 0-1000. It is converted back
to pixels with the frame's real width and height.

Every call first takes a slot from the shared `RequestBudget`; answers that say the quota is
spent (429 RESOURCE_EXHAUSTED with RetryInfo / QuotaFailure details) pause the whole budget.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from ..budget import RequestBudget, next_pacific_midnight
from ..config import GeminiConfig
from . import Detection, DetectionSkipped

RESPONSE_SCHEMA = {
    "type": "ARRAY",
    "items": {
        "type": "OBJECT",
        "properties": {
            "label": {"type": "STRING"},
            "box_2d": {"type": "ARRAY", "items": {"type": "INTEGER"}},
            "confidence": {"type": "NUMBER"},
        },
        "required": ["label", "box_2d"],
    },
}
PROMPT = ("Detect the objects in this image{which}. Return a JSON list with one entry per object: "
          '"label" (the object name), "box_2d" as [ymin, xmin, ymax, xmax] normalised to 0-1000, '
          'and "confidence" from 0 to 1.')
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class GeminiError(Exception):
    """An answer from Gemini that is not a usable detection list (logged, counted)."""


class GeminiDetector:
    """Asks a Gemini model for boxes; one call at a time per instance (one per camera)."""

    kind = "gemini"

    def __init__(self, config: GeminiConfig, api_key: str, budget: RequestBudget, *,
                 labels: Sequence[str] = (), session: requests.Session | None = None,
                 clock: Callable[[], float] = time.time, log: logging.Logger | None = None) -> None:
        self.config = config
        self._key = api_key
        self.budget = budget
        self.labels = list(labels)
        self.session = session or requests.Session()
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        self.url = f"{config.base_url.rstrip('/')}/v1beta/models/{config.model}:generateContent"
        self.calls = 0
        self.failures = 0
        self.last_error = ""
        self._logged: set[str] = set()

    def __repr__(self) -> str:  # never the key
        return f"GeminiDetector(model={self.config.model!r}, url={self.url!r})"

    def request_body(self, jpeg: bytes) -> dict[str, Any]:
        """The generateContent body for one JPEG."""
        which = f" (look for: {', '.join(self.labels)})" if self.labels else ""
        prompt = PROMPT.format(which=which)
        if self.config.prompt:
            prompt = f"{prompt} {self.config.prompt}"
        return {
            "contents": [{"parts": [
                {"inline_data": {"mime_type": "image/jpeg", "data": base64.b64encode(jpeg).decode("ascii")}},
                {"text": prompt},
            ]}],
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": RESPONSE_SCHEMA},
        }

    def detect(self, jpeg: bytes, width: int, height: int) -> list[Detection]:
        """The objects Gemini sees in `jpeg` (a `width` x `height` frame), in pixels.

        Raises DetectionSkipped when the budget has no call to spare or the call failed (the
        budget then holds every camera back as the answer asks); GeminiError for an answer
        that cannot be read.
        """
        now = self.clock()
        wait_until = self.budget.reserve(now)
        if wait_until:
            raise DetectionSkipped("request budget", wait_until)
        self.calls += 1
        try:
            response = self.session.post(
                self.url, json=self.request_body(jpeg), timeout=self.config.timeout_s,
                headers={"x-goog-api-key": self._key, "Content-Type": "application/json"},
            )
        except requests.RequestException as exc:
            # The exception text names the URL (never the key, which travels in a header).
            backoff = self.budget.on_failure(self.clock())
            self._failed(f"{type(exc).__name__}", f"Gemini request failed ({type(exc).__name__}); "
                         f"backing off {backoff:g} s")
            raise DetectionSkipped("request failed", self.clock() + backoff) from None
        return self.to_detections(self._answer(response), width, height)

    def _answer(self, response: requests.Response) -> list[Any]:
        now = self.clock()
        status = response.status_code
        if status == 429:
            body = _json(response)
            if _is_daily_quota(body):
                self.budget.on_daily_exhausted(now)
                self.last_error = "daily quota exhausted"
                raise DetectionSkipped("daily quota exhausted", next_pacific_midnight(now))
            delay = _retry_delay(body, response.headers.get("Retry-After"))
            self.budget.on_rate_limited(now, delay)
            self._failed("429", f"Gemini rate limit (429 RESOURCE_EXHAUSTED): all cameras wait {delay:g} s")
            raise DetectionSkipped("rate limited", now + delay)
        if status >= 500:
            backoff = self.budget.on_failure(now)
            self._failed(f"http{status}", f"Gemini answered HTTP {status}; backing off {backoff:g} s")
            raise DetectionSkipped(f"HTTP {status}", now + backoff)
        if status != 200:
            backoff = self.budget.on_failure(now)
            message = _error_message(_json(response))
            self._failed(f"http{status}", f"Gemini refused the request: HTTP {status} {message}")
            raise DetectionSkipped(f"HTTP {status}", now + backoff)
        self.budget.on_success(now)
        if self._logged:
            self.log.info("Gemini calls succeed again")
            self._logged.clear()
        self.last_error = ""
        return self._parse(_json(response))

    def _parse(self, body: Any) -> list[Any]:
        try:
            parts = body["candidates"][0]["content"]["parts"]
            text = "".join(p.get("text", "") for p in parts)
            items = json.loads(text)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            self._failed("parse", f"Gemini answer is not a JSON detection list ({type(exc).__name__})")
            raise GeminiError("unreadable answer") from None
        if not isinstance(items, list):
            self._failed("parse", "Gemini answer is not a JSON list")
            raise GeminiError("unreadable answer")
        return items

    def to_detections(self, items: list[Any], width: int, height: int) -> list[Detection]:
        """Gemini's box_2d items ([ymin, xmin, ymax, xmax] in 0-1000) as pixel detections."""
        out = []
        for item in items:
            box = item.get("box_2d") if isinstance(item, dict) else None
            label = item.get("label") if isinstance(item, dict) else None
            if (not isinstance(label, str) or not isinstance(box, list) or len(box) != 4
                    or not all(isinstance(v, int | float) for v in box)):
                self._failed("item", "Gemini returned an item without a label and a 4-number box_2d")
                continue
            ymin, xmin, ymax, xmax = (min(1000.0, max(0.0, float(v))) for v in box)
            x0, x1 = xmin * width / 1000.0, xmax * width / 1000.0
            y0, y1 = ymin * height / 1000.0, ymax * height / 1000.0
            confidence = item.get("confidence", 1.0)
            if not isinstance(confidence, int | float):
                confidence = 1.0
            out.append(Detection(label=label.strip(), pixel=((x0 + x1) / 2, (y0 + y1) / 2),
                                 confidence=min(1.0, max(0.0, float(confidence))),
                                 box=(x0, y0, x1, y1)))
        return out

    def _failed(self, kind: str, message: str) -> None:
        self.failures += 1
        self.last_error = message
        if kind not in self._logged:
            self._logged.add(kind)
            self.log.warning("%s (further ones are counted, not logged)", message)


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
        if detail.get("@type", "").endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                    return True
    return False


def _retry_delay(body: Any, retry_after: str | None, default: float = 60.0) -> float:
    """Seconds from google.rpc.RetryInfo's retryDelay ("17s"), else Retry-After, else 60."""
    for detail in _details(body):
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    if retry_after and retry_after.strip().isdigit():
        return float(retry_after)
    return default


def _error_message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('status', '')}: {str(error.get('message', ''))[:200]}"
    return ""
