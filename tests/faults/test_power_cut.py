"""A node's host loses power (no FIN, no RST reaches us) and comes back: the camera returns on
its own — at the gateway and at a robot's Subscriber — without restarting either of them."""

from __future__ import annotations

import requests

from camfabric.sim.faults import power_cut_and_return, watched_node


def test_a_camera_comes_back_on_its_own_after_its_host_power_cut(host, tmp_path, zmq_context):
    with watched_node(host, tmp_path, zmq_context) as (config, gateway, robot):
        at_robot, at_gateway = power_cut_and_return(host, config, gateway, robot)
        answer = requests.get(gateway.url + "latest/0", timeout=2)
        assert answer.status_code == 200
        assert int(answer.headers["X-Frame-Age-Ms"]) < 2000
        assert max(at_robot, at_gateway) < 10
