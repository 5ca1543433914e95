"""WebRTC viewers of the fabric's H.264: one aiortc peer connection per WHEP session.

    peers = WebRtcPeers(endpoints).start()
    answer = peers.offer(cam=0, sdp=offer_sdp)     # -> Answer(session, sdp, etag)
    peers.add_candidates(answer.session, fragment)  # trickled ICE (an SDP fragment)
    peers.close_session(answer.session)

aiortc runs on its own asyncio loop, in one thread of this process; the HTTP threads hand it
work and wait for the result. The video side (a camera's feed and its viewers' tracks) is
`webrtc_video.py`. The video is the node's own H.264 (`frame/{cam}/h264`), never
re-encoded here: each access unit becomes an `av.Packet` that aiortc only packetizes, so ten
viewers of one camera cost the node one encode. The camera's H.264 is subscribed (on a
subscriber of its own, so the JPEG cache never sees it) while it has a viewer, and released
a second after the last one leaves.

A viewer starts at a keyframe: the first viewer of a camera at once (the node forces one for
a new subscription), a later one at the next keyframe, within one GOP (a second). Asking the
node again by a second subscription from the same socket would upset its count of subscribers:
ZeroMQ passes the duplicate subscribe on, but only one unsubscribe.

Only video is sent: the audio m-line of an offer (Mainsail and Fluidd offer sendrecv audio and
video) is answered inactive. ICE uses host candidates only, no STUN unless configured, so it
works on a LAN with no internet. A viewer that vanishes without DELETE is noticed by ICE
consent checks (RFC 7675) within `CONSENT_INTERVAL_S * CONSENT_FAILURES` seconds, and a
session whose ICE never connects is dropped after `CONNECT_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..protocol import wire
from ..protocol.subscriber import Subscriber
from ..runtime.errors import CamfabricError
from ..runtime.threads import Ready, start_thread
from .webrtc_video import CameraFeed, FabricVideoTrack

try:  # the optional `webrtc` extra
    import aioice.ice
    import av
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCPeerConnection,
        RTCRtpSender,
        RTCSessionDescription,
    )
    from aiortc.rtcpeerconnection import filter_preferred_codecs
    from aiortc.sdp import candidate_from_sdp
except ImportError:  # pragma: no cover - depends on the installation
    aioice = av = None

INSTALL_HINT = "pip install 'camfabric[webrtc]' (PyAV and aiortc; no 32-bit ARM wheels)"
CONNECT_TIMEOUT_S = 15.0  # a session whose ICE has not connected by then is dropped
CONSENT_INTERVAL_S = 1.0  # ICE consent check period (RFC 7675 says 5 s; a viewer gone is
CONSENT_FAILURES = 4      # noticed after this many unanswered checks)
RELEASE_AFTER_S = 1.0  # the camera's H.264 stays subscribed this long after its last viewer
CALL_TIMEOUT_S = 10.0
MAX_SESSIONS = 64


class WebRtcError(CamfabricError):
    """A WHEP request that cannot be served; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, title: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.title = title


def available() -> bool:
    """True when PyAV and aiortc are installed."""
    return av is not None


def require() -> None:
    """Raise WebRtcError 501 saying what to install, unless WebRTC is available."""
    if not available():
        raise WebRtcError(501, "WebRTC not installed",
                          f"this gateway has no WebRTC support; install it with {INSTALL_HINT} "
                          "and restart it. MJPEG (/cam/{id}) works without it")


def _tune_ice_consent() -> None:
    # aioice reads these module constants on every consent round; RFC 7675's 5 s x 6 would
    # keep a vanished viewer's session (and the node's encoder) for half a minute.
    aioice.ice.CONSENT_INTERVAL = CONSENT_INTERVAL_S
    aioice.ice.CONSENT_FAILURES = CONSENT_FAILURES


@dataclass(frozen=True, slots=True)
class Answer:
    session: str
    sdp: str
    etag: str


def _send_only(transceiver: Any, codecs: list[Any]) -> None:
    """Answer `transceiver` with `codecs` alone. aiortc matches the offer's codecs with the
    preferences in setRemoteDescription, before an answerer can state any, so the match is
    narrowed here: the one place this module touches aiortc's internals (a test of the
    answer's codecs fails if they change)."""
    transceiver.setCodecPreferences(codecs)
    transceiver._codecs = filter_preferred_codecs(transceiver._codecs, codecs)


@dataclass
class Session:
    id: str
    cam: int
    pc: Any
    track: FabricVideoTrack
    etag: str
    created: float
    connected: bool = False


class WebRtcPeers:
    """Every WHEP session of this process, with the asyncio loop aiortc runs on."""

    def __init__(self, endpoints: str | Iterable[str], *, context: Any = None, curve: Any = None,
                 ice_servers: Iterable[str] = (), max_sessions: int = MAX_SESSIONS,
                 session_prefix: str = "", log: logging.Logger | None = None) -> None:
        self.log = log or logging.getLogger(__name__)
        self.ice_servers = tuple(ice_servers)
        self.max_sessions = max_sessions
        self.session_prefix = session_prefix
        self.subscriber = Subscriber(endpoints, cameras=None, encoding="h264", on_demand=True,
                                     idle_s=RELEASE_AFTER_S, context=context, curve=curve,
                                     rcvhwm=64, log=self.log)
        self.sessions: dict[str, Session] = {}
        self.feeds: dict[int, CameraFeed] = {}
        self.closed_sessions = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> WebRtcPeers:
        require()
        _tune_ice_consent()
        self.subscriber.add_listener(self._on_message)
        self.subscriber.start()
        self._thread = start_thread(self._run, name="camfabric-webrtc")
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Close every session and stop the loop and the subscriber."""
        if self.loop is not None and self.loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._close_all(), timeout / 2)
            self.loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout / 2)
        self.subscriber.close()

    stop = close

    def _run(self, ready: Ready) -> None:
        self.loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        ready.set()
        try:
            self.loop.run_until_complete(self._watch())
        finally:
            self.loop.close()

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.connected and now - session.created > CONNECT_TIMEOUT_S:
                    self.log.info("WebRTC session %s (camera %d): ICE did not connect within "
                                  "%g s; dropped", session.id[:12], session.cam, CONNECT_TIMEOUT_S)
                    await self._end(session.id)

    def _call(self, coroutine: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        if self.loop is None:
            raise WebRtcError(503, "WebRTC not started", "the gateway's WebRTC loop is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise WebRtcError(503, "WebRTC busy", f"the gateway's WebRTC loop did not answer "
                                                  f"within {timeout:g} s") from exc

    # -- what the HTTP side calls (any thread) -----------------------------------------------
    def offer(self, cam: int, sdp: str) -> Answer:
        """Answer a viewer's SDP offer for camera `cam`: a new session."""
        return self._call(self._offer(cam, sdp))

    def add_candidates(self, session: str, fragment: str, if_match: str | None) -> None:
        """Add trickled ICE candidates (an `application/trickle-ice-sdpfrag` body)."""
        self._call(self._patch(session, fragment, if_match))

    def close_session(self, session: str) -> None:
        """End a session (the viewer's DELETE)."""
        if not self._call(self._end(session)):
            raise WebRtcError(404, "Unknown session", "no such WebRTC session (ended already?)")

    def viewers(self) -> dict[int, dict[str, int]]:
        """Per camera: sessions open now and video bytes sent to them so far."""
        counts: dict[int, dict[str, int]] = {}
        for feed in list(self.feeds.values()):
            counts[feed.cam] = {"viewers": len(feed.tracks), "bytes_sent": feed.bytes_sent}
        return counts

    # -- on the loop -------------------------------------------------------------------------
    def _on_message(self, msg: wire.Message) -> None:  # the subscriber's thread
        if isinstance(msg, wire.Frame) and msg.encoding == "h264" and self.loop is not None:
            feed = self.feeds.get(msg.cam)
            if feed is not None and feed.tracks:
                frame = msg if isinstance(msg.data, bytes) else _with_bytes(msg)
                self.loop.call_soon_threadsafe(feed.on_frame, frame)

    async def _offer(self, cam: int, sdp: str) -> Answer:
        if len(self.sessions) >= self.max_sessions:
            raise WebRtcError(503, "Too many WebRTC viewers",
                              f"this gateway process serves at most {self.max_sessions} sessions")
        _check_offer(sdp)
        servers = [RTCIceServer(urls=url) for url in self.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        feed = self.feeds.setdefault(cam, CameraFeed(cam, self.subscriber))
        track = FabricVideoTrack(feed)
        session = Session(id=self.session_prefix + secrets.token_urlsafe(18), cam=cam, pc=pc,
                          track=track, etag=f'"{secrets.token_hex(8)}"', created=time.monotonic())
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.lower() == "video/h264"]
            video = [t for t in pc.getTransceivers() if t.kind == "video"]
            for transceiver in pc.getTransceivers():
                if transceiver.kind != "video" or transceiver is not video[0]:
                    transceiver.direction = "inactive"
            _send_only(video[0], h264)
            pc.addTrack(track)
            await pc.setLocalDescription(await pc.createAnswer())
        except WebRtcError:
            await pc.close()
            raise
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError and others
            await pc.close()
            raise WebRtcError(400, "Bad SDP offer", f"the offer cannot be answered: "
                                                   f"{type(exc).__name__}: {exc}"[:300]) from exc
        if " H264/" not in pc.localDescription.sdp:
            await pc.close()
            raise WebRtcError(400, "Bad SDP offer", "the offer's video has no H.264 codec this "
                              "gateway can send (packetization-mode 1)")

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState == "connected":
                session.connected = True
            elif pc.connectionState in ("failed", "closed"):
                await self._end(session.id)

        self.sessions[session.id] = session
        feed.add(track)
        self.log.info("WebRTC session %s: camera %d, %d viewer(s) of it now", session.id[:12],
                      cam, len(feed.tracks))
        return Answer(session.id, pc.localDescription.sdp, session.etag)

    async def _patch(self, session_id: str, fragment: str, if_match: str | None) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            raise WebRtcError(404, "Unknown session", "no such WebRTC session (ended already?)")
        if if_match is not None and if_match.strip() not in ("*", session.etag):
            raise WebRtcError(412, "ETag mismatch", "If-Match does not name this session's ETag")
        mids = [t.mid for t in session.pc.getTransceivers()]
        mid = mids[0] if mids else None
        for line in fragment.splitlines():
            line = line.strip()
            if line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:"):
                try:
                    candidate = candidate_from_sdp(line[2:].split(":", 1)[1])
                except (ValueError, IndexError) as exc:
                    raise WebRtcError(400, "Bad ICE candidate", f"cannot read {line[:80]!r}") from exc
                candidate.sdpMid = mid
                await session.pc.addIceCandidate(candidate)

    async def _end(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        self.closed_sessions += 1
        feed = self.feeds.get(session.cam)
        if feed is not None:
            feed.remove(session.track)
        session.track.stop()
        await session.pc.close()
        self.log.info("WebRTC session %s (camera %d) ended", session.id[:12], session.cam)
        return True

    async def _close_all(self) -> None:
        for session_id in list(self.sessions):
            await self._end(session_id)


def _with_bytes(frame: wire.Frame) -> wire.Frame:
    """`frame` holding its own copy of the payload, free of the ZeroMQ message's buffer."""
    return dataclasses.replace(frame, data=bytes(frame.data))


def _check_offer(sdp: str) -> None:
    """A WebRtcError 400 naming what is wrong with an offer before aiortc sees it."""
    if not sdp.startswith("v=0"):
        raise WebRtcError(400, "Bad SDP offer", "the body is not an SDP offer (it must start "
                                                "with v=0)")
    if "\nm=video " not in sdp.replace("\r\n", "\n"):
        raise WebRtcError(400, "Bad SDP offer", "the offer has no video m-line; camfabric sends "
                                                "video only")
