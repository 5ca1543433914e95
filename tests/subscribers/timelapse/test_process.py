"""`camfabric timelapse` as the process systemd runs: it follows a print to its video and stops
on SIGTERM within the 2 s every camfabric process keeps, without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.conftest import PYTHON, REPO

from .conftest import video_frames, wait_for


def test_the_command_records_a_print_and_stops_cleanly_on_sigterm(node, moonraker, tmp_path):
    out = tmp_path / "timelapse"
    config = tmp_path / "camfabric.toml"
    config.write_text(f'[timelapse]\nnodes = ["{node.endpoint}"]\nmoonraker = "{moonraker.url}"\n'
                      f'publish = "tcp://127.0.0.1:0"\nsettle_s = 0.05\nfps = 5\noutput_dir = "{out}"\n')
    log = (tmp_path / "timelapse.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "MOONRAKER_API_KEY"}
    proc = subprocess.Popen([PYTHON, "-m", "camfabric.cli", "timelapse", "--config", str(config)],
                            cwd=REPO, stdout=log, stderr=log, env=env)
    try:
        assert moonraker.wait_subscribed(30)
        moonraker.start_print("part.gcode")
        for layer in (1, 2, 3):
            moonraker.set_layer(layer)
            time.sleep(0.2)
        moonraker.finish("complete")
        (video,) = wait_for(lambda: list(out.glob("timelapse_part_*.mp4")), 30, "the video")
        assert video_frames(video) == 3 and video.with_suffix(".jpg").is_file()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 2.0  # the contract: every process stops within 2 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = (tmp_path / "timelapse.log").read_text()
    assert "Traceback" not in text and "rendered" in text
