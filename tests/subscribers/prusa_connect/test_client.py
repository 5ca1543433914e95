"""ConnectClient: the HTTP contract, each answer class mapped to the right error, the token kept out."""

from __future__ import annotations

import email.utils
import traceback

import pytest
import requests

from camfabric.subscribers.prusa_connect.client import (
    ConnectClient,
    FingerprintRejected,
    RequestRejected,
    TokenRejected,
    TransientError,
    parse_retry_after,
)

from .conftest import TOKEN_A, TOKEN_B, jpeg_for

FP = "camfabric-client-test-fingerprint"


@pytest.fixture
def client(connect):
    c = ConnectClient(connect.url, 0.5, requests.Session())
    yield c
    c.close()


def test_a_snapshot_and_info_go_as_connect_documents(connect, client):
    reply = client.put_snapshot(TOKEN_A, FP, jpeg_for(1))
    assert reply.status == 204
    client.put_info(TOKEN_A, FP, {"name": "Bed", "resolution": {"width": 64, "height": 48}})
    snap, info = connect.requests
    assert (snap.method, snap.path, snap.token, snap.fingerprint) == ("PUT", "/c/snapshot", TOKEN_A, FP)
    assert snap.headers["content-type"] == "image/jpg"
    assert info.info == {"config": {"name": "Bed", "resolution": {"width": 64, "height": 48}}}
    assert "token" not in snap.headers.get("host", "").lower() and TOKEN_A not in snap.path


def failure(client, token=TOKEN_A, fp=FP, body=None):
    with pytest.raises(Exception) as info:
        client.put_snapshot(token, fp, body if body is not None else jpeg_for(1))
    text = str(info.value) + "".join(traceback.format_exception(info.value))
    assert token not in text  # the token never reaches an error message or traceback
    return info.value


def test_each_kind_of_refusal_is_classified(connect, client):
    assert isinstance(failure(client, token="ZZZZzzzz9999YYYYyyyy"), TokenRejected)
    connect.revoke(TOKEN_B)
    assert isinstance(failure(client, token=TOKEN_B), TokenRejected)
    client.put_snapshot(TOKEN_A, FP, jpeg_for(1))
    err = failure(client, fp="another-fingerprint-0000")
    assert isinstance(err, FingerprintRejected) and err.status == 400
    with pytest.raises(TokenRejected) as info:  # /c/info answers a foreign fingerprint with 403
        client.put_info(TOKEN_A, "another-fingerprint-0000", {"name": "Bed"})
    assert "bound to another device" in info.value.action
    err = failure(client, body=b"\xff\xd8 truncated")
    assert isinstance(err, RequestRejected) and not isinstance(err, FingerprintRejected)
    wrong = ConnectClient(connect.url + "/nowhere", 0.5)
    err = failure(wrong)
    assert isinstance(err, RequestRejected) and err.status == 404 and "prusa_connect.server" in str(err)


def test_server_trouble_and_network_trouble_are_transient(connect, client, closed_port):
    connect.fail(503, retry_after=7)
    err = failure(client)
    assert isinstance(err, TransientError) and err.status == 503 and err.retry_after == 7
    connect.fail(429)
    err = failure(client)
    assert isinstance(err, TransientError) and err.status == 429 and err.retry_after is None
    connect.slow(1.5)
    assert "no answer within 0.5 s" in str(failure(client))
    connect.drop()
    assert isinstance(failure(client), TransientError)
    nobody = ConnectClient(f"http://127.0.0.1:{closed_port}", 0.5)
    err = failure(nobody)
    assert isinstance(err, TransientError) and "cannot reach" in str(err)


def test_200_with_json_is_success(fabric_free_connect_200):
    client = ConnectClient(fabric_free_connect_200.url, 0.5)
    reply = client.put_snapshot(TOKEN_A, FP, jpeg_for(1))
    assert reply.status == 200 and reply.body == {"message": "OK"}


@pytest.fixture
def fabric_free_connect_200():
    from tests.fakes.prusa_connect import FakeConnect
    with FakeConnect(success="200") as fake:
        fake.add_camera(TOKEN_A)
        yield fake


def test_retry_after_reads_seconds_and_dates():
    assert parse_retry_after("12") == 12
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0
    when = email.utils.formatdate(1000.0 + 30, usegmt=True)
    assert parse_retry_after(when, now=1000.0) == pytest.approx(30)
    assert parse_retry_after("999999") == 3600


def test_public_names():
    import camfabric.subscribers.prusa_connect as package

    assert sorted(package.__all__) == package.__all__
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert issubclass(package.TokenRejected, package.PermanentError)
    assert issubclass(package.ConnectError, __import__("camfabric").protocol.CamfabricError)
