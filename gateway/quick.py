"""QuickLatest: `GET /latest/{id}` answered on the HTTP server's loop thread, without the
framework, while the camera is being asked for.

`/latest` is the route robot code and dashboards poll as fast as they can; through Waitress
and Falcon each answer passed from the server's loop thread to a request thread and back and
built a WSGI environ and a Falcon request. A camera whose `/latest` was answered within
HOT_S is subscribed and live (its subscription stays for the cache's idle time, 10 s), and
its answer is then the cached frame with its age — what `resources.Frames.latest` sends —
so it is built here, in one step, with the same headers (CORS included) and counted in the
same metric. Anything else — another route, a query, HEAD, an address `allow_from` refuses, a
camera not asked for lately (its first answer may have to wait for a fresh frame), one that is
not live — is declined and answered by the app as always.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..protocol.errors import UnknownCamera
from .cache import FrameCache
from .resources import IMAGE_HEADERS, LATEST_ROUTE, MAX_ID_DIGITS
from .waitress_seam import QuickRequest

PREFIX = "/latest/"
# Well under the cache's idle time (10 s), so a camera answered this recently is subscribed.
HOT_S = 2.0


class QuickLatest:
    """The `quick` answer of waitress_seam.HttpServer for `/latest/{id}`."""

    def __init__(self, cache: FrameCache, answered: dict[int, float], allowed: Callable[[str], bool],
                 count: Callable[[str, int], None], cors: list[tuple[str, str]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = cache
        self.answered = answered  # camera -> when its /latest was last answered (`clock`)
        self.allowed = allowed
        self.count = count
        self.static_headers = [*cors, *IMAGE_HEADERS.items(), ("Content-Type", "image/jpeg")]
        self.clock = clock
        self.answers = 0  # how many it answered (on the loop thread only)

    def __call__(self, request: QuickRequest) -> tuple[list[tuple[str, str]], Any] | None:
        if request.method != "GET" or request.query or not request.path.startswith(PREFIX):
            return None
        digits = request.path[len(PREFIX):]
        if digits.endswith("/"):
            digits = digits[:-1]
        if not (0 < len(digits) <= MAX_ID_DIGITS and digits.isascii() and digits.isdigit()):
            return None
        cam = int(digits)
        now = self.clock()
        last = self.answered.get(cam)
        if last is None or now - last > HOT_S or not self.allowed(request.remote_addr):
            return None
        try:
            self.cache.latest(cam, wake_timeout_s=0)  # still wanted; never waits here
            view = self.cache.view(cam)
        except UnknownCamera:
            return None
        frame = view.frame
        if not view.connected or frame is None:
            return None
        self.answered[cam] = now
        self.answers += 1
        self.count(LATEST_ROUTE, 200)
        age_ms = round(frame.age_ns(self.cache.clock()) / 1e6)
        return [*self.static_headers, ("Content-Length", str(len(frame.data))),
                ("X-Frame-Age-Ms", str(age_ms)),
                ("X-Timestamp", f"{frame.t_capture_ns / 1e9:.6f}")], frame.data
