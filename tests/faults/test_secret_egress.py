"""Secrets that cannot leave: the clients that carry one (the Gemini key, the Prusa Connect
token) never follow a redirect and never hand a loopback request to a proxy named in the
environment; configuration errors never echo a value shaped like a key."""

from __future__ import annotations

import traceback

import numpy as np
import pytest
import requests

from camfabric.protocol.jpeg import encode_jpeg
from camfabric.runtime.backoff import Backoff
from camfabric.runtime.clock import ManualClock
from camfabric.runtime.errors import ConfigError
from camfabric.subscribers.prusa_connect.client import ConnectClient, RequestRejected
from camfabric.subscribers.tracker.budget import RequestBudget
from camfabric.subscribers.tracker.config import GeminiConfig, load_tracker_config
from camfabric.subscribers.tracker.detectors.gemini import GeminiDetector, GeminiRefused
from camfabric.subscribers.tracker.intake import CameraGate
from tests.fakes.gemini import FakeGemini
from tests.fakes.prusa_connect import FakeConnect
from tests.fakes.recorder import Recorder

KEY = "AIzaSyA-test-secret-key-0123456789abcde"  # shaped like a real Google API key
TOKEN = "AAAAaaaa1111BBBBbbbb"
FINGERPRINT = "camfabric-egress-test-fingerprint"
JPEG = encode_jpeg(np.full((48, 64, 3), 128, np.uint8))
MODEL_PATH = "/v1beta/models/gemini-3-flash-preview:generateContent"


@pytest.fixture
def lan_host():
    """Where a hostile redirect points (a LAN host in the field; loopback here)."""
    with Recorder(status=200) as host:
        yield host


@pytest.fixture
def env_proxy(monkeypatch):
    """A proxy named in the environment, as a shell profile or a systemd unit might set it."""
    with Recorder(status=502) as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        yield proxy


def detector(base_url: str, session: requests.Session | None = None) -> tuple[GeminiDetector, CameraGate]:
    clock = ManualClock()
    config = GeminiConfig(base_url=base_url, requests_per_minute=1000, requests_per_day=1000)
    budget = RequestBudget(per_minute=1000, per_day=1000, clock=clock,
                           backoff=Backoff(base_s=1.0, cap_s=10.0, jitter=0.0))
    return (GeminiDetector(config, KEY, budget, session=session, clock=clock),
            CameraGate(budget, "0", 2.0, 30.0))


def shown(exc: BaseException) -> str:
    return str(exc) + "".join(traceback.format_exception(exc))


# -- Gemini ----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_gemini_refuses_a_redirect_and_the_key_goes_no_further(lan_host, status):
    with Recorder(status=status, location=lan_host.url + MODEL_PATH) as server:
        gemini, gate = detector(server.url)
        with pytest.raises(GeminiRefused) as info:
            gemini.detect(JPEG, 64, 48, gate)
    assert lan_host.requests == []
    assert len(server.requests) == 1  # the configured server, asked once
    message = str(info.value)
    assert "redirect" in message and server.url in message
    assert KEY not in shown(info.value) and KEY not in gemini.last_error
    with pytest.raises(GeminiRefused):  # and it does not try again until reconfigured
        gemini.detect(JPEG, 64, 48, gate)
    assert len(server.requests) == 1


@pytest.mark.parametrize("injected", [False, True])
def test_gemini_on_loopback_never_goes_through_an_environment_proxy(env_proxy, injected):
    with FakeGemini(api_key=KEY, objects=[{"label": "cup", "box_2d": [0, 0, 500, 500]}]) as fake:
        gemini, gate = detector(fake.url, requests.Session() if injected else None)
        (found,) = gemini.detect(JPEG, 64, 48, gate)
    assert found.label == "cup"
    assert env_proxy.requests == []


# -- Prusa Connect ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_connect_refuses_a_redirect_and_the_token_goes_no_further(lan_host, status):
    with Recorder(status=status, location=lan_host.url + "/c/snapshot") as server:
        client = ConnectClient(server.url, 2.0)
        with pytest.raises(RequestRejected) as info:
            client.put_snapshot(TOKEN, FINGERPRINT, JPEG)
        client.close()
    assert lan_host.requests == []
    message = str(info.value)
    assert "redirect" in message and f"{server.url}/c/snapshot" in message
    assert TOKEN not in shown(info.value)


@pytest.mark.parametrize("injected", [False, True])
def test_connect_on_loopback_never_goes_through_an_environment_proxy(env_proxy, injected):
    with FakeConnect() as connect:
        connect.add_camera(TOKEN)
        client = ConnectClient(connect.url, 2.0, requests.Session() if injected else None)
        assert client.put_snapshot(TOKEN, FINGERPRINT, JPEG).status == 204
        client.close()
    assert env_proxy.requests == []


# -- Configuration errors --------------------------------------------------------------------

def test_a_key_pasted_into_the_model_is_refused_without_being_shown(tmp_path):
    config = tmp_path / "camfabric.toml"
    config.write_text(f'[tracker.gemini]\nmodel = "{KEY}"\n')
    with pytest.raises(ConfigError) as info:
        load_tracker_config(config)
    assert info.value.path == "tracker.gemini.model"
    assert "API key" in str(info.value)
    assert KEY not in shown(info.value)


@pytest.mark.parametrize("value", [KEY, "AIza" + "B" * 35, "sk-Q2hlY2tNZTEyMzQ1Njc4OTBhYmNkZWZnaGlq"])
def test_no_config_error_echoes_a_value_shaped_like_a_key(value):
    with pytest.raises(ConfigError) as info:
        GeminiConfig(base_url=f"ftp://{value}.example")
    assert value not in shown(info.value)
    with pytest.raises(ConfigError) as info:
        GeminiConfig(model=f"{value}/v2")
    assert value not in shown(info.value)


@pytest.mark.parametrize("value", ["/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_8A2B3C4D-video-index0",
                                   "gemini-2.5-flash-lite-preview-06-17", "DICT_4X4_50"])
def test_names_made_of_words_are_still_shown(value):
    # A device path or a model name is what the user must see to fix a mistake.
    assert value in str(ConfigError("node.cameras[0].device", f"{value} cannot be opened"))
