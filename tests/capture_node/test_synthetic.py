"""The synthetic camera: a moving, stamped picture at the asked size and pace, cheaply."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from camfabric.capture_node.config import CameraConfig
from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.sources import synthetic


def test_frames_have_the_size_move_and_are_paced():
    source = synthetic.create(synthetic.Options(), CameraConfig(id=1, resolution=(320, 200), fps=25))
    source.open()
    start = time.monotonic()
    frames = [source.read(1.0) for _ in range(11)]
    took = time.monotonic() - start
    source.close()
    assert all(f.image.shape == (200, 320, 3) and (f.w, f.h) == (320, 200) for f in frames)
    assert 0.3 < took < 0.8  # ten periods of 40 ms after the first frame
    assert not np.array_equal(frames[0].image, frames[5].image)
    stamps = [f.t_capture_ns for f in frames]
    assert stamps == sorted(stamps) and abs(stamps[-1] / 1e9 - time.time()) < 1.0


def test_the_counter_is_drawn():
    source = synthetic.SyntheticSource(320, 200, 1000, label="x", speed=0)  # a ball at rest
    source.open()
    first, second = source.read(1.0).image, source.read(1.0).image
    changed_rows = np.flatnonzero((first != second).any(axis=(1, 2)))
    assert changed_rows.size and changed_rows.min() > 150  # only the stamp line at the bottom


def test_interrupt_wakes_a_waiting_read():
    source = synthetic.SyntheticSource(64, 48, 0.5)
    source.open()
    source.read(5.0)
    threading.Timer(0.1, source.interrupt).start()
    start = time.monotonic()
    with pytest.raises(SourceError, match="interrupted"):
        source.read(5.0)
    assert time.monotonic() - start < 0.5


def test_probe_reports_the_size():
    report = synthetic.SyntheticSource(64, 48, 30).probe()
    assert report.opened and report.resolutions == [(64, 48)] and report.first_frame_ms < 1000


def test_a_1080p_frame_costs_little_cpu():
    source = synthetic.SyntheticSource(1920, 1080, 1000)
    source.open()
    source.read(1.0)
    cpu = time.process_time()
    for _ in range(20):
        source.read(1.0)
    per_frame_ms = (time.process_time() - cpu) / 20 * 1000
    # three 1080p cameras at 30 fps fit in a core only below ~11 ms a frame
    assert per_frame_ms < 11, per_frame_ms
