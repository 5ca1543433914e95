"""Shared helpers of the tracker tests: a hand-driven clock and rendered tabletop frames."""

from __future__ import annotations

import pytest

from camfabric.protocol.jpeg import decode_jpeg, encode_jpeg
from camfabric.sim import tabletop


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def camera_image(view, t: float = 0.0, **kwargs):
    """A tabletop frame as a camera would deliver it (through JPEG at quality 80) + truth."""
    image, truth = tabletop.render(view, t, **kwargs)
    jpeg = encode_jpeg(image, 80)
    return decode_jpeg(jpeg), jpeg, truth
