"""Shared pieces of the uploader's tests: the fake Connect, a fabric we publish on, a fake clock."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from camfabric.protocol import Frame, Publisher, Subscriber, encode_jpeg
from tests.conftest import ANY_PORT
from tests.fakes.prusa_connect import FakeConnect

TOKEN_A = "AAAAaaaa1111BBBBbbbb"
TOKEN_B = "CCCCcccc2222DDDDdddd"
TOKEN_C = "EEEEeeee3333FFFFffff"


class FakeClock:
    """A monotonic nanosecond clock that moves only when told to."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000_000
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self.ns

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.ns += int(seconds * 1e9)


def jpeg_for(seq: int, w: int = 64, h: int = 48, noise: bool = False) -> bytes:
    """A small, distinct JPEG per sequence number."""
    if noise:
        image = np.random.default_rng(seq).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        image = np.full((h, w, 3), seq % 256, dtype=np.uint8)
        image[: h // 2, : w // 2] = (seq * 7) % 256
    return encode_jpeg(image, quality=90)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Fabric:
    """A Publisher the test drives and the Subscriber the uploader reads, on a fake clock."""

    publisher: Publisher
    subscriber: Subscriber
    clock: FakeClock
    published: dict[str, int] = field(default_factory=dict)  # sha -> seq

    def publish(self, cam: int, seq: int, w: int = 64, h: int = 48, noise: bool = False,
                data: bytes | None = None) -> bytes:
        """Publish frame `seq` of `cam` once someone subscribes to it; wait until the subscriber
        holds it."""
        assert self.publisher.wait_for_subscriber(f"frame/{cam}/jpeg".encode(), timeout=10), \
            f"nobody subscribed to camera {cam}'s frames"
        data = data if data is not None else jpeg_for(seq, w, h, noise)
        self.published[sha(data)] = seq
        frame = Frame(cam=cam, seq=seq, t_capture_ns=time.time_ns(), w=w, h=h, encoding="jpeg",
                      data=data, node="test")
        deadline = time.monotonic() + 10  # generous: a loaded machine delays subscriptions
        held = None
        while time.monotonic() < deadline:
            # Sent again until it arrives: a subscription made a moment ago may not have reached
            # both ends yet (the receiver drops what it is not yet subscribed to). Each copy
            # waits for something newer than what the subscriber holds: re-sending in a tight
            # loop would queue thousands of copies ahead of the frame.
            self.publisher.publish(frame)
            try:
                got = self.subscriber.latest(cam, timeout=0.2, newer_than=held)
            except Exception:
                continue
            if got.seq == seq:
                return data
            held = got
        raise AssertionError(f"frame {seq} of camera {cam} never reached the subscriber")


@pytest.fixture
def connect():
    with FakeConnect() as fake:
        fake.add_camera(TOKEN_A)
        fake.add_camera(TOKEN_B)
        yield fake


@pytest.fixture
def fabric(zmq_context):
    clock = FakeClock()
    with (Publisher(ANY_PORT, context=zmq_context) as pub,
          Subscriber(pub.endpoint, cameras=[0, 1], context=zmq_context, clock=clock) as sub):
        assert pub.wait_for_subscriber(b"frame/0/jpeg", timeout=3)
        yield Fabric(pub, sub, clock)
