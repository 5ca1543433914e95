"""A camera's H.264 from the fabric as WebRTC video tracks, one per viewer.

`CameraFeed` holds the camera's `frame/{cam}/h264` subscribed while it has a viewer and hands
every access unit to each viewer's `FabricVideoTrack`, which gives aiortc `av.Packet`s to
packetize — the node's own encode, never a second one. A track starts at a keyframe; after a
sequence gap (an access unit lost on the way) every track waits for the next keyframe, and a
track whose viewer cannot keep up is cut back to the next keyframe instead of queueing.
Everything here runs on the WebRTC event loop (`webrtc.WebRtcPeers`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
from dataclasses import dataclass, field
from typing import Any

from ..protocol import wire
from ..protocol.subscriber import Subscriber

try:  # the optional `webrtc` extra
    import av
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError
except ImportError:  # pragma: no cover - depends on the installation
    av = None
    MediaStreamTrack = object

CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
VIEWER_QUEUE = 30  # access units a viewer may be behind before it is cut back to a keyframe


class FabricVideoTrack(MediaStreamTrack):
    """A viewer's video: the camera's access units as `av.Packet`s, starting at a keyframe."""

    kind = "video"

    def __init__(self, feed: CameraFeed) -> None:
        super().__init__()
        self.feed = feed
        self.waiting_for_key = True
        self.dropped = 0
        self._queue: collections.deque[wire.Frame] = collections.deque()
        self._ready = asyncio.Event()
        self._t0_ns: int | None = None
        self._last_pts = -1

    def push(self, frame: wire.Frame) -> None:
        """Take one access unit (on the event loop)."""
        if self.waiting_for_key and not frame.key:
            return
        if len(self._queue) >= VIEWER_QUEUE:
            self.dropped += len(self._queue)
            self._queue.clear()
            self.waiting_for_key = True
            if not frame.key:
                return
        self.waiting_for_key = False
        self._queue.append(frame)
        self._ready.set()

    async def recv(self) -> Any:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError()
            self._ready.clear()
            await self._ready.wait()
        frame = self._queue.popleft()
        if self._t0_ns is None:
            self._t0_ns = frame.t_capture_ns
        # RTP time from capture times: differences on the node's one clock.
        pts = max(self._last_pts + 1, (frame.t_capture_ns - self._t0_ns) * CLOCK_RATE // 10**9)
        self._last_pts = pts
        packet = av.Packet(bytes(frame.data))
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        self.feed.bytes_sent += len(frame.data)
        return packet

    def stop(self) -> None:
        super().stop()
        self._ready.set()


@dataclass
class CameraFeed:
    """One camera's H.264 from the fabric, handed to its viewers' tracks."""

    cam: int
    subscriber: Subscriber
    tracks: set[FabricVideoTrack] = field(default_factory=set)
    node: str = ""
    last_seq: int = 0
    gaps: int = 0
    bytes_sent: int = 0
    _hold: contextlib.ExitStack | None = None

    def on_frame(self, frame: wire.Frame) -> None:
        """One access unit from the fabric (on the event loop)."""
        if not self.node:
            self.node = frame.node  # the camera's owner from now until its last viewer leaves
        if frame.node != self.node:
            return  # a second node claiming this camera: never mix two streams
        if self.last_seq and frame.seq != self.last_seq + 1 and not frame.key:
            self.gaps += 1
            for track in self.tracks:
                track.waiting_for_key = True
        self.last_seq = frame.seq
        for track in list(self.tracks):
            track.push(frame)

    def add(self, track: FabricVideoTrack) -> None:
        if self._hold is None:
            self._hold = contextlib.ExitStack()
            self._hold.enter_context(self.subscriber.watching(self.cam, "h264"))
        self.tracks.add(track)

    def remove(self, track: FabricVideoTrack) -> None:
        self.tracks.discard(track)
        if not self.tracks and self._hold is not None:
            self._hold.close()  # unsubscribed RELEASE_AFTER_S later, unless a viewer returns
            self._hold = None
            self.last_seq = 0
            self.node = ""
