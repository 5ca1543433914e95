"""Shared helpers of the tracker tests: rendered tabletop frames, a state directory per test."""

from __future__ import annotations

import pytest

from camfabric.protocol.jpeg import decode_jpeg, encode_jpeg
from camfabric.sim import tabletop


def camera_image(view, t: float = 0.0, **kwargs):
    """A tabletop frame as a camera would deliver it (through JPEG at quality 80) + truth."""
    image, truth = tabletop.render(view, t, **kwargs)
    jpeg = encode_jpeg(image, 80)
    return decode_jpeg(jpeg), jpeg, truth


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """Trackers under test keep their shared budget state in the test's own directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
