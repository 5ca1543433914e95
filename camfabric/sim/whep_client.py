"""A WHEP viewer doing exactly what Mainsail's and Fluidd's `webrtc-mediamtx` player does, with
aiortc as the browser: OPTIONS {stream_url}/whep, POST an offer with a sendrecv video *and*
audio transceiver and no candidates in it (they are trickled), expect 201 + answer + Location +
ETag, PATCH the candidates to the Location (`application/trickle-ice-sdpfrag`, If-Match) and
expect 204, watch the video, DELETE the Location when done.

Also runnable as a process (`python -m camfabric.sim.whep_client URL SECONDS`), which prints one
JSON line when its video plays, so a test can kill it the way a closed laptop lid does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import requests
from aiortc import RTCPeerConnection, RTCSessionDescription


@dataclass
class Viewing:
    """What the viewer saw: the answers to each step, and every decoded picture's size and time."""

    options: requests.Response | None = None
    post: requests.Response | None = None
    patch: requests.Response | None = None
    delete: requests.Response | None = None
    location: str = ""
    sizes: list[tuple[int, int]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    pictures: list = field(default_factory=list)  # (arrival, ndarray) when keep_pictures
    first_picture_s: float | None = None

    def rate(self) -> float:
        """Pictures per second over the second half of the viewing (after start-up)."""
        if len(self.times) < 4:
            return 0.0
        half = self.times[len(self.times) // 2:]
        return (len(half) - 1) / (half[-1] - half[0])


def split_candidates(sdp: str) -> tuple[str, str]:
    """(the offer without its candidate lines, those candidates as a trickle-ICE fragment)."""
    lines = sdp.splitlines()
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    frag, mid = [], None
    for line in lines:
        if line.startswith(("a=ice-ufrag:", "a=ice-pwd:")) and line not in frag:
            frag.append(line)
    for line in lines:
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line
        elif line.startswith("a=candidate:") and mid is not None:
            if mid not in frag:
                frag += ["m=video 9 UDP/TLS/RTP/SAVPF 0" if "0" in mid else "m=audio 9 UDP/TLS/RTP/SAVPF 0",
                         mid]
            frag.append(line)
    frag.append("a=end-of-candidates")
    return "\r\n".join(kept) + "\r\n", "\r\n".join(frag) + "\r\n"


async def view(stream_url: str, seconds: float, *, delete: bool = True, keep_pictures: bool = False,
               on_playing=None, session_via: str | None = None, on_picture=None,
               start_timeout: float = 5.0) -> Viewing:
    """Watch `stream_url` (e.g. http://127.0.0.1:8081/webrtc/0) for `seconds` after the first
    picture (giving up when none came within `start_timeout`). `session_via` sends the PATCH and DELETE to
    another server (another gateway worker) instead of the one that answered the POST.
    `on_picture(picture)` is called with each decoded `av.VideoFrame` as it arrives."""
    seen = Viewing()
    whep = stream_url.rstrip("/") + "/whep"
    seen.options = await asyncio.to_thread(requests.options, whep, timeout=5)
    pc = RTCPeerConnection()  # no ICE servers: host candidates only, as on a LAN
    pc.addTransceiver("video", direction="sendrecv")
    pc.addTransceiver("audio", direction="sendrecv")
    playing = asyncio.Event()
    started = time.monotonic()

    @pc.on("track")
    def on_track(track) -> None:
        if track.kind != "video":
            return

        async def read() -> None:
            while True:
                try:
                    picture = await track.recv()
                except Exception:
                    return
                now = time.monotonic()
                if seen.first_picture_s is None:
                    seen.first_picture_s = now - started
                    playing.set()
                seen.sizes.append((picture.width, picture.height))
                seen.times.append(now)
                if on_picture is not None:
                    on_picture(picture)
                if keep_pictures:
                    seen.pictures.append((now, picture.to_ndarray(format="bgr24")))

        asyncio.ensure_future(read())

    await pc.setLocalDescription(await pc.createOffer())
    offer, fragment = split_candidates(pc.localDescription.sdp)
    seen.post = await asyncio.to_thread(requests.post, whep, data=offer.encode(), timeout=10,
                                        headers={"Content-Type": "application/sdp"})
    if seen.post.status_code != 201:
        await pc.close()
        return seen
    seen.location = urljoin(session_via or whep, seen.post.headers["Location"])
    seen.patch = await asyncio.to_thread(
        requests.patch, seen.location, data=fragment.encode(), timeout=5,
        headers={"Content-Type": "application/trickle-ice-sdpfrag",
                 "If-Match": seen.post.headers["ETag"]})
    await pc.setRemoteDescription(RTCSessionDescription(sdp=seen.post.text, type="answer"))
    try:
        await asyncio.wait_for(playing.wait(), start_timeout)
        if on_playing is not None:
            on_playing(seen)
        await asyncio.sleep(seconds)
    except TimeoutError:
        pass
    if delete:
        seen.delete = await asyncio.to_thread(requests.delete, seen.location, timeout=5)
    await pc.close()
    return seen


def _main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])

    def playing(seen: Viewing) -> None:
        print(json.dumps({"playing": True, "location": seen.location}), flush=True)

    asyncio.run(view(url, seconds, delete=False, on_playing=playing))


if __name__ == "__main__":
    _main()
