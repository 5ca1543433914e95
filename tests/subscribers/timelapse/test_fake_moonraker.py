"""The fake Moonraker is as strict as the published API it cites: a test passing against it means
a client that speaks Moonraker's JSON-RPC, not one the fake lets off."""

from __future__ import annotations

import json
import logging

from websockets.sync.client import connect

from camfabric.runtime.clock import SYSTEM_CLOCK
from camfabric.subscribers.timelapse.moonraker import MoonrakerLink
from tests.fakes.moonraker_ws import FakeMoonrakerWS

from .conftest import wait_for

IDENTIFY = {"client_name": "t", "version": "1", "type": "other", "url": "http://x"}


def call(ws, method, params=None, request_id=1):
    message = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    ws.send(json.dumps(message))
    while True:
        answer = json.loads(ws.recv(timeout=5))
        if answer.get("id") == request_id:
            return answer


def test_the_fake_answers_by_the_book_and_records_what_breaks_it():
    with FakeMoonrakerWS() as fake:
        with connect(fake.url.replace("http", "ws") + "/websocket", proxy=None, close_timeout=1) as ws:
            assert call(ws, "server.connection.identify", IDENTIFY)["result"]["connection_id"] > 0
            assert call(ws, "server.connection.identify", IDENTIFY, 2)["error"]["code"] == -32600
            assert call(ws, "server.info", None, 3)["result"]["klippy_state"] == "ready"
            answer = call(ws, "printer.objects.subscribe", {"objects": {"print_stats": ["state"]}}, 4)
            assert answer["result"]["status"] == {"print_stats": {"state": "standby"}}
            fake.start_print("a.gcode")
            note = json.loads(ws.recv(timeout=5))
            # only the subscribed fields that changed, and [status, eventtime]
            assert note["method"] == "notify_status_update" and "id" not in note
            assert note["params"][0] == {"print_stats": {"state": "printing"}}
            assert isinstance(note["params"][1], float)
            fake.gcode_response("// hello")
            assert json.loads(ws.recv(timeout=5))["params"] == ["// hello"]
            assert call(ws, "printer.gcode.nope", None, 5)["error"]["code"] == -32601
            ws.send("{not json")
            assert json.loads(ws.recv(timeout=5))["error"]["code"] == -32700
        assert len(fake.violations) == 2  # the second identify, the bad JSON


def test_an_api_key_is_sent_in_identify_and_never_logged(caplog):
    caplog.set_level(logging.DEBUG)

    class Listener:
        def __init__(self):
            self.full = []

        def on_connected(self): pass
        def on_status(self, stats, now, full): self.full.append(full)
        def on_gcode_response(self, line, now): pass
        def on_klippy_lost(self, now): pass
        def on_disconnected(self, reason): pass

    with FakeMoonrakerWS(api_key="the-right-key") as fake:
        url = fake.url.replace("http", "ws") + "/websocket"
        wrong = MoonrakerLink(url, Listener(), api_key="a-wrong-key", clock=SYSTEM_CLOCK).start()
        try:
            wait_for(lambda: "Unauthorized" in wrong.last_error, what="a refusal")
            assert fake.subscribed_clients() == 0
        finally:
            wrong.stop()
        listener = Listener()
        right = MoonrakerLink(url, listener, api_key="the-right-key").start()
        try:
            assert fake.wait_subscribed(10) and wait_for(lambda: listener.full == [True])
        finally:
            right.stop()
        assert fake.violations == []
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server"))
    assert "Unauthorized" in ours  # the client's own lines were captured, at DEBUG
    assert "the-right-key" not in ours and "a-wrong-key" not in ours
    assert all("api_key" not in entry for entry in fake.identified)
