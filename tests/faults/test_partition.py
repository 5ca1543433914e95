"""A 60 s partition between a node's host and the gateway: when it heals, no frame captured
before it is served as fresh — at the gateway or at a robot's Subscriber.

The node runs in a network namespace on this machine, so its wall clock *is* ours: the test
(and only the test) may compare its capture stamps with our clock to know a frame's true age.
"""

from __future__ import annotations

import os
import time

import pytest
import requests

from camfabric import protocol
from camfabric.sim.faults import watched_node

PARTITION_S = float(os.environ.get("CAMFABRIC_PARTITION_S", "60"))
SLACK_MS = 500  # what a frame's reported age may fall short of its true age


@pytest.mark.slow
def test_no_frame_from_before_a_partition_is_served_as_fresh(host, tmp_path, zmq_context):
    with watched_node(host, tmp_path, zmq_context) as (_, gateway, robot):
        host.partition()
        cut_wall_ns = time.time_ns()
        time.sleep(PARTITION_S)
        host.heal()

        seen: list[protocol.Frame] = []
        deadline = time.monotonic() + 10
        gateway_ages: list[tuple[int, int]] = []
        while time.monotonic() < deadline:
            frame = robot.poll(timeout=0.2)
            if frame is not None:
                seen.append(frame)
                true_age_ms = (time.time_ns() - frame.t_capture_ns) // 1_000_000
                assert frame.age_ns() // 1_000_000 >= true_age_ms - SLACK_MS, (
                    f"a frame {true_age_ms} ms old reported {frame.age_ns() // 1_000_000} ms")
            answer = requests.get(gateway.url + "latest/0", timeout=2)
            if answer.ok:
                reported = int(answer.headers["X-Frame-Age-Ms"])
                captured_s = float(answer.headers.get("X-Timestamp", "0") or 0)
                if captured_s:
                    gateway_ages.append((reported, int((time.time() - captured_s) * 1000)))
        assert seen and seen[-1].t_capture_ns > cut_wall_ns, "no fresh frame after the partition"
        for reported, true_age in gateway_ages:
            assert reported >= true_age - SLACK_MS, (reported, true_age)
