"""The fake Connect refuses what Connect refuses — checked here so that an uploader test passing
against it means something."""

from __future__ import annotations

import json

import requests

from tests.fakes.prusa_connect import FakeConnect

from .conftest import TOKEN_A, jpeg_for

FP = "camfabric-fake-test-fingerprint"


def put(connect, path, token=TOKEN_A, fingerprint=FP, body=b"", ctype="image/jpg"):
    return requests.put(connect.url + path, data=body, timeout=5,
                        headers={"Token": token, "Fingerprint": fingerprint, "Content-Type": ctype})


def info(connect, config, **kw):
    body = json.dumps({"config": config}).encode()
    return put(connect, "/c/info", body=body, ctype="application/json", **kw)


def test_the_strict_rules():
    now = [100.0]
    with FakeConnect(clock=lambda: now[0]) as connect:
        connect.add_camera(TOKEN_A)
        # The camera registers with its first snapshot: info before it is refused.
        early = info(connect, {"name": "x"})
        assert early.status_code == 400 and set(early.json()) == {"code", "message"}
        assert connect.bound_fingerprint(TOKEN_A) is None
        assert put(connect, "/c/snapshot", body=jpeg_for(1)).status_code == 204
        assert connect.bound_fingerprint(TOKEN_A) == FP
        # One snapshot per camera per 10 s, counted on the fake's clock.
        now[0] += 9.9
        too_soon = put(connect, "/c/snapshot", body=jpeg_for(2))
        assert too_soon.status_code == 429 and too_soon.json()["code"] == "TOO_MANY_REQUESTS"
        now[0] += 0.1
        assert put(connect, "/c/snapshot", body=jpeg_for(3)).status_code == 204
        # Token format, fingerprint binding, name length, trigger schemes.
        assert put(connect, "/c/snapshot", token=TOKEN_A[:19], body=jpeg_for(4)).status_code == 401
        assert put(connect, "/c/snapshot", token=TOKEN_A[:19] + "_", body=jpeg_for(4)).status_code == 401
        other = put(connect, "/c/snapshot", fingerprint="another-device-fingerprint", body=jpeg_for(4))
        assert other.status_code == 400 and other.json()["message"] == "Invalid fingerprint"
        assert info(connect, {"name": "n" * 64, "trigger_scheme": "TEN_SEC"}).status_code == 204
        long_name = info(connect, {"name": "n" * 65})
        assert long_name.status_code == 400 and "detail" in long_name.json()
        assert info(connect, {"name": "x", "trigger_scheme": "FIVE_SEC"}).status_code == 400
        assert info(connect, {"name": "x", "resolution": {"width": "64", "height": 48}}).status_code == 400
        assert not connect.errors
