"""`camfabric moonraker` against a real node and gateway, and a fake Moonraker held to its API."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from camfabric import cli
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.gateway.config import GatewayConfig
from camfabric.gateway.server import Gateway
from camfabric.moonraker import DEFAULT_SERVICE, aspect_ratio, webcams
from tests.conftest import ANY_PORT
from tests.fakes.moonraker import FakeMoonraker


@pytest.fixture(scope="module")
def gateway():
    import zmq

    context = zmq.Context()
    cameras = (CameraConfig(id=0, name="Printer", resolution=(160, 90), fps=10),
               CameraConfig(id=2, name="Nozzle [close]", resolution=(160, 120), fps=10))
    node = CaptureNode(NodeConfig(name="printer", publish=ANY_PORT, cameras=cameras), context=context).start()
    gw = Gateway(GatewayConfig(port=0, subscribe=(node.endpoint,)), context=context).start()
    try:
        deadline = time.monotonic() + 10
        while len(requests.get(gw.url + "cameras", timeout=2).json()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield gw.url.rstrip("/")
    finally:
        gw.stop()
        node.stop()
        context.term()


def sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()  # Moonraker reads moonraker.conf with configparser
    parser.read_string(text)
    return parser


def test_prints_one_section_per_camera_with_direct_urls(gateway, capsys):
    assert cli.main(["moonraker", "--gateway", gateway]) == 0
    conf = sections(capsys.readouterr().out)
    assert conf.sections() == ["webcam Printer", "webcam Nozzle close"]
    printer = conf["webcam Printer"]
    assert printer["stream_url"] == f"{gateway}/?action=stream&cam=0"
    assert printer["snapshot_url"] == f"{gateway}/?action=snapshot&cam=0"
    assert printer["service"] == "mjpegstreamer-adaptive" and printer["aspect_ratio"] == "16:9"
    assert printer.getint("rotation") == 0 and not printer.getboolean("flip_horizontal")
    assert not printer.getboolean("flip_vertical") and 1 <= printer.getint("target_fps") <= 30
    assert conf["webcam Nozzle close"]["aspect_ratio"] == "4:3"
    # The URLs answer what they promise: a JPEG for the snapshot, an MJPEG stream for the stream.
    # (503 is the gateway's "no fresh frame yet" on a busy machine: asked again until a deadline.)
    snap = get_until_not_503(conf["webcam Nozzle close"]["snapshot_url"])
    assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
    with get_until_not_503(printer["stream_url"], stream=True) as stream:
        assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")


def get_until_not_503(url: str, **kwargs) -> requests.Response:
    deadline = time.monotonic() + 15
    while True:
        answer = requests.get(url, timeout=5, **kwargs)
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        answer.close()
        time.sleep(0.2)


def test_a_path_prefix_gives_relative_urls_through_the_web_uis_nginx(gateway, capsys):
    assert cli.main(["moonraker", "--gateway", gateway, "--path-prefix", "/webcam2",
                     "--service", "mjpegstreamer"]) == 0
    conf = sections(capsys.readouterr().out)
    printer = conf["webcam Printer"]
    assert printer["stream_url"] == "/webcam2/?action=stream&cam=0"
    assert printer["snapshot_url"] == "/webcam2/?action=snapshot&cam=0"
    assert conf["webcam Nozzle close"]["stream_url"] == "/webcam2/?action=stream&cam=2"
    assert printer["service"] == "mjpegstreamer"


def test_webrtc_mediamtx_entries_point_the_player_at_the_gateways_whep_base(gateway, capsys):
    assert cli.main(["moonraker", "--gateway", gateway, "--service", "webrtc-mediamtx"]) == 0
    conf = sections(capsys.readouterr().out)
    printer = conf["webcam Printer"]
    assert printer["service"] == "webrtc-mediamtx"
    assert printer["stream_url"] == f"{gateway}/webrtc/0"
    assert printer["snapshot_url"] == f"{gateway}/?action=snapshot&cam=0"
    # The player sends OPTIONS to {stream_url}/whep first: the route is there.
    answer = requests.options(printer["stream_url"] + "/whep", timeout=5)
    assert answer.status_code == 204 and answer.headers["Accept-Post"] == "application/sdp"


def test_registering_twice_leaves_one_entry_per_camera_and_never_touches_moonraker_conf(
        gateway, capsys, monkeypatch):
    monkeypatch.setenv("MOONRAKER_API_KEY", "secret-key")
    with FakeMoonraker(api_key="secret-key") as moonraker:
        moonraker.add_config_webcam("Printer", stream_url="/webcam/?action=stream", service="crowsnest")
        args = ["moonraker", "--gateway", gateway, "--path-prefix", "/webcam2/", "--register", moonraker.url]
        assert cli.main(args) == 0
        first = {c["name"]: c for c in moonraker.webcams()}
        assert cli.main([*args[:-2], "--service", "mjpegstreamer", "--register", moonraker.url]) == 0
        out = capsys.readouterr().out
        cams = moonraker.webcams()
        assert sorted(c["name"] for c in cams) == ["Nozzle close", "Printer"]  # one entry per camera
        nozzle = next(c for c in cams if c["name"] == "Nozzle close")
        assert nozzle["uid"] == first["Nozzle close"]["uid"]  # updated in place
        assert nozzle["service"] == "mjpegstreamer" and nozzle["source"] == "database"
        assert nozzle["stream_url"] == "/webcam2/?action=stream&cam=2"
        assert nozzle["snapshot_url"] == "/webcam2/?action=snapshot&cam=2"
        printer = next(c for c in cams if c["name"] == "Printer")
        assert printer["source"] == "config" and printer["service"] == "crowsnest"  # untouched
        assert printer["stream_url"] == "/webcam/?action=stream"
        assert "defined in moonraker.conf: left alone" in out
        assert not [r for r in moonraker.requests if r[2] >= 400]  # never even tried to overwrite it


def test_the_fake_moonraker_refuses_what_moonraker_refuses():
    with FakeMoonraker() as moonraker:
        moonraker.add_config_webcam("Printer", stream_url="/webcam/?action=stream")
        post = moonraker.url + "/server/webcams/item"
        answer = requests.post(post, json={"name": "Printer", "stream_url": "/x"}, timeout=5)
        assert answer.status_code == 400
        assert answer.json()["error"]["message"] == ("Cannot overwrite webcam 'Printer' sourced from "
                                                     "Moonraker configuration")
        assert requests.post(post, json={"name": "a"}, timeout=5).status_code == 400  # no stream_url
        assert requests.post(post, json={"name": "a", "stream_url": "/s", "rotation": 45},
                             timeout=5).status_code == 400
        assert requests.post(post, json={"uid": "nope", "name": "a"}, timeout=5).status_code == 404


def test_without_the_api_key_moonraker_asks_for_and_the_error_says_so(gateway, capsys, monkeypatch):
    monkeypatch.delenv("MOONRAKER_API_KEY", raising=False)
    with FakeMoonraker(api_key="secret-key") as moonraker:
        assert cli.main(["moonraker", "--gateway", gateway, "--register", moonraker.url]) == 1
        assert "MOONRAKER_API_KEY" in capsys.readouterr().err
        assert moonraker.webcams() == []


def test_bad_options_exit_2_naming_the_option(capsys):
    assert cli.main(["moonraker", "--gateway", "printer.local:8081"]) == 2
    assert "--gateway" in capsys.readouterr().err
    assert cli.main(["moonraker", "--path-prefix", "webcam2"]) == 2
    assert "--path-prefix" in capsys.readouterr().err


def test_a_gateway_that_is_not_there_is_said_plainly(capsys, closed_port):
    assert cli.main(["moonraker", "--gateway", f"http://127.0.0.1:{closed_port}"]) == 1
    assert "is `camfabric gateway` running there?" in capsys.readouterr().err


@pytest.mark.parametrize(("w", "h", "ratio"), [(1280, 720, "16:9"), (640, 480, "4:3"), (1920, 1080, "16:9"),
                                               (0, 0, "4:3"), (1600, 1200, "4:3")])
def test_aspect_ratio_in_lowest_terms(w, h, ratio):
    assert aspect_ratio(w, h) == ratio


def test_something_that_is_not_moonraker_is_refused_plainly(gateway, capsys):
    # The gateway answers JSON too, but not Moonraker's: nothing is posted, the cause is named.
    assert cli.main(["moonraker", "--gateway", gateway, "--register", gateway]) == 1
    err = capsys.readouterr().err
    assert "GET /server/webcams/list answered 404" in err and "Traceback" not in err


def test_the_gateway_address_comes_from_the_config_file(gateway, capsys, tmp_path):
    port = gateway.rsplit(":", 1)[1]
    config = tmp_path / "camfabric.toml"
    config.write_text(f'[gateway]\nhost = "0.0.0.0"\nport = {port}\n')  # as on the printer Pi
    assert cli.main(["moonraker", "--config", str(config), "--path-prefix", "/webcam2/"]) == 0
    assert "webcam Printer" in sections(capsys.readouterr().out)
    config.write_text('[gateway]\nport = "8081"\n')
    assert cli.main(["moonraker", "--config", str(config)]) == 2
    assert "gateway.port" in capsys.readouterr().err


def test_the_fake_moonraker_answers_only_its_methods():
    with FakeMoonraker() as moonraker:
        assert requests.put(moonraker.url + "/server/webcams/list", timeout=5).status_code == 405
        assert requests.put(moonraker.url + "/server/webcams/item", timeout=5).status_code == 405
        assert requests.get(moonraker.url + "/server/info", timeout=5).status_code == 404
        listed = requests.get(moonraker.url + "/server/webcams/list", timeout=5)
        assert listed.json() == {"result": {"webcams": []}}


@pytest.mark.parametrize("service", ["foo", "", "ipstream", "webrtc-camerastreamer"])
def test_a_service_the_gateway_does_not_serve_exits_2_naming_the_choices(service, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["moonraker", "--gateway", "http://127.0.0.1:1", "--service", service])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--service" in err and "mjpegstreamer-adaptive" in err and "webrtc-mediamtx" in err


def test_webrtc_mediamtx_points_the_stream_at_the_whep_route(gateway, capsys):
    assert cli.main(["moonraker", "--gateway", gateway, "--service", "webrtc-mediamtx"]) == 0
    printer = sections(capsys.readouterr().out)["webcam Printer"]
    assert printer["service"] == "webrtc-mediamtx"
    assert printer["stream_url"] == f"{gateway}/webrtc/0"


DASHBOARD_JS = Path(__file__).parents[1] / "gateway" / "static" / "moonraker.js"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is needed to run the dashboard's script")
def test_the_dashboards_moonraker_block_is_what_the_command_prints(gateway):
    """Pasting the dashboard's block and registering with `camfabric moonraker` must name each
    camera once: the same section names, keys and values, from the same /cameras and /status."""
    cameras = requests.get(gateway + "/cameras", timeout=5).json()
    status = requests.get(gateway + "/status", timeout=5).json()
    # Awkward names too: brackets, spaces, a duplicate, none at all, a half fps.
    cameras["7"] = {**cameras["0"], "id": 7, "name": "  Printer  ", "resolution": [1280, 720]}
    cameras["9"] = {**cameras["0"], "id": 9, "name": "", "resolution": [0, 0]}
    status["7"] = {"fps": 14.5}
    args = ", ".join(json.dumps(value) for value in (cameras, status, gateway))
    script = (f"const m = require({json.dumps(str(DASHBOARD_JS))});"
              f"const w = m.moonrakerWebcams({args});"
              "process.stdout.write(Object.values(w).map((c) => c.section).join('\\n'));")
    dashboard = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=20,
                               check=True).stdout
    command = "\n".join(cam.section() for cam in webcams(cameras, status, base=gateway, path_prefix=None,
                                                          service=DEFAULT_SERVICE))
    assert dashboard == command
    conf = sections(dashboard)
    assert conf.sections() == ["webcam Printer", "webcam Nozzle close", "webcam Printer 7", "webcam camera9"]
    assert len(conf["webcam Printer"]) == 9 and conf["webcam Printer 7"]["target_fps"] == "15"
