"""The fake Gemini itself holds to the published contract (tests/fakes/gemini.py cites each
rule): a fake that accepted anything would let the tracker's tests pass against a service that
does not exist."""

from __future__ import annotations

import base64
import datetime as dt

import numpy as np
import pytest
import requests

from camfabric.protocol.jpeg import encode_jpeg
from camfabric.runtime.clock import ManualClock
from tests.fakes.gemini import PACIFIC, FakeGemini

KEY = "AIzaSyE-fake-contract-key-0123456789abc"
IMAGE = base64.b64encode(encode_jpeg(np.zeros((8, 8, 3), np.uint8))).decode()
SCHEMA = {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"label": {"type": "STRING"}},
                                     "required": ["label"]}}


def _body(*, camel: bool = False, schema=None, **generation) -> dict:
    inline = ({"inlineData": {"mimeType": "image/jpeg", "data": IMAGE}} if camel
              else {"inline_data": {"mime_type": "image/jpeg", "data": IMAGE}})
    config_key = "generationConfig" if camel else "generation_config"
    return {"contents": [{"parts": [inline, {"text": "find things"}]}],
            config_key: {"responseMimeType": "application/json", "responseSchema": schema or SCHEMA,
                         **generation}}


def _post(fake, body, model="gemini-3.5-flash-lite", key=KEY, query=""):
    headers = {"x-goog-api-key": key} if key else {}
    return requests.post(f"{fake.url}/v1beta/models/{model}:generateContent{query}", json=body,
                         headers=headers, timeout=5)


@pytest.fixture
def fake():
    with FakeGemini(api_key=KEY, objects=[{"label": "cup", "box_2d": [1, 2, 3, 4]}]) as server:
        yield server


@pytest.mark.parametrize("camel", [False, True])
def test_both_json_spellings_are_accepted(fake, camel):
    answer = _post(fake, _body(camel=camel))
    assert answer.status_code == 200
    assert answer.json()["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize(("body", "said"), [
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temprature": 1}},
     'Unknown name "temprature"'),
    ({"contents": [{"parts": [{"text": "x", "colour": 1}]}]}, 'Unknown name "colour"'),
    ({"contents": [{"parts": [{"text": "x"}]}], "contents_": []}, 'Unknown name "contents_"'),
    ({"contents": []}, "contents is not specified"),
    ({"contents": [{"parts": [{"inline_data": {"mime_type": "image/jpeg", "data": "%%%"}}]}]}, "Base64"),
    ({"contents": [{"parts": [{"inline_data": {"mime_type": "text/csv", "data": IMAGE}}]}]}, "MIME type"),
])
def test_unknown_fields_and_malformed_parts_are_refused(fake, body, said):
    answer = _post(fake, body)
    assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert said in answer.json()["error"]["message"]


@pytest.mark.parametrize(("schema", "said"), [
    ({"type": "ARRAY"}, "items: missing"),
    ({"type": "OBJECT"}, "should be non-empty for OBJECT"),
    ({"type": "INTEGER", "enum": ["a"]}, "only allowed for STRING"),
    ({"type": "LIST", "items": {"type": "STRING"}}, "Invalid value 'LIST'"),
    ({"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["b"]}, "not defined"),
    ({"type": "OBJECT", "properties": {"a": {"type": "STRING", "format2": 1}}}, 'Unknown name "format2"'),
])
def test_schema_mistakes_are_refused(fake, schema, said):
    answer = _post(fake, _body(schema=schema))
    assert answer.status_code == 400 and said in answer.json()["error"]["message"]


def test_thinking_rules(fake):
    both = _post(fake, _body(thinkingConfig={"thinkingBudget": 0, "thinkingLevel": "minimal"}))
    assert both.status_code == 400
    level_on_2_5 = _post(fake, _body(thinkingConfig={"thinkingLevel": "low"}), model="gemini-2.5-flash-lite")
    assert level_on_2_5.status_code == 400
    assert _post(fake, _body(thinkingConfig={"thinkingBudget": 0}), model="gemini-2.5-flash-lite").ok


def test_keys_and_models(fake):
    missing = _post(fake, _body(), key="")
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = _post(fake, _body(), key="AIzaSy-nope")
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    retired = _post(fake, _body(), model="gemini-2.5-flash")
    assert retired.status_code == 404 and "is not found for API version v1beta" in retired.text
    in_url = _post(fake, _body(), key="", query=f"?key={KEY}")
    assert in_url.status_code == 200 and fake.requests[-1].problems == ["API key in the URL"]


@pytest.mark.parametrize(("behaviour", "status", "check"), [
    ("bare429", 429, lambda b: "details" not in b["error"]),
    ("503", 503, lambda b: "overloaded" in b["error"]["message"]),
    ("blocked", 200, lambda b: b["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in b),
    ("max_tokens", 200, lambda b: b["candidates"][0]["finishReason"] == "MAX_TOKENS"),
    ("daily", 429, lambda b: "PerDay" in b["error"]["details"][0]["violations"][0]["quotaId"]),
])
def test_every_error_body_the_tracker_must_handle(fake, behaviour, status, check):
    fake.script = [behaviour]
    answer = _post(fake, _body())
    assert answer.status_code == status and check(answer.json())


def test_its_own_limits_per_project_fixed_minute_windows_and_the_pacific_day():
    start = dt.datetime(2026, 11, 21, 23, 59, 30, tzinfo=PACIFIC).timestamp()
    clock = ManualClock(wall=start)
    with FakeGemini(api_key=KEY, per_minute=2, per_day=3, clock=clock) as fake:
        assert [_post(fake, _body()).status_code for _ in range(2)] == [200, 200]
        third = _post(fake, _body())  # the same fixed minute: 30 s left in it
        assert third.status_code == 429
        retry = [d for d in third.json()["error"]["details"] if d["@type"].endswith("RetryInfo")]
        assert retry[0]["retryDelay"] == "30s"
        clock.advance(29.0)
        assert _post(fake, _body()).status_code == 429
        clock.advance(1.0)  # the next minute — and, at 00:00 Pacific, a new day
        assert _post(fake, _body()).status_code == 200
        clock.advance(60.0)
        assert [_post(fake, _body()).status_code for _ in range(3)] == [200, 200, 429]
        quota = _post(fake, _body()).json()["error"]["details"][0]["violations"][0]["quotaId"]
        assert "PerDay" in quota  # 3 a day: the day's quota, not the minute's
