"""The startup scan: device listing, and a report that goes out even when a probe hangs."""

from __future__ import annotations

import time

from camfabric import protocol
from camfabric.capture_node.config import CameraConfig, NodeConfig
from camfabric.capture_node.node import CaptureNode
from camfabric.capture_node.scan import video_devices
from camfabric.protocol import topics
from tests.capture_node.test_node import StuckCamera, UnpluggedCamera, wait_until
from tests.conftest import ANY_PORT


def test_video_devices_are_listed_in_numeric_order(tmp_path):
    for name in ("video10", "video2", "video0", "videoX"):
        (tmp_path / name).touch()
    found = video_devices(str(tmp_path / "video*"))
    assert [p.rsplit("/", 1)[1] for p in found] == ["video0", "video2", "video10", "videoX"]
    assert video_devices(str(tmp_path / "nothing*")) == []


def test_the_scan_reports_failures_and_does_not_wait_for_a_hung_probe(zmq_context):
    cams = tuple(CameraConfig(id=i, resolution=(64, 48), fps=10) for i in range(3))
    config = NodeConfig(name="scanned", publish=ANY_PORT, cameras=cams, heartbeat_s=0.1)
    sources = {1: UnpluggedCamera(), 2: StuckCamera()}
    with (CaptureNode(config, zmq_context, sources=sources, scan_deadline_s=0.3) as node,
          protocol.Subscriber(node.endpoint, cameras=[], context=zmq_context,
                              topics_extra=(b"scan/",)) as sub):
        started = time.monotonic()
        assert wait_until(lambda: sub.message(topics.scan("scanned")) is not None, 2.0)
        scan = sub.message(topics.scan("scanned"))
    assert scan is not None and time.monotonic() - started < 1.5
    report = scan.report
    assert report["node"] == "scanned" and isinstance(report["devices"], list)
    assert report["cameras"]["0"]["opened"] is True
    assert report["cameras"]["1"]["opened"] is False
    assert "no such device" in report["cameras"]["1"]["error"]
    assert report["cameras"]["2"]["opened"] is False
    assert "not probed" in report["cameras"]["2"]["error"]
