"""create_app: the gateway's Falcon application over a FrameCache.

Routes are ARCHITECTURE.md's HTTP table; a trailing slash is accepted on every one. Our
exceptions become HTTP here, once: `UnknownCamera` → 404, `FrameTimeout` → 503 with
Retry-After, `ProtocolError` (a JPEG that does not decode) → 502. Every error body is JSON
`{"title", "description"}` — never HTML, never a traceback (Waitress's own errors are made
JSON by `waitress_seam.JsonErrorTask`).

What holds for every answer is done once, by middleware:

- `Cors`: `Access-Control-Allow-Origin: *` and `Access-Control-Expose-Headers` naming every
  `X-*` header the API sends, on images, JSON and errors alike; a preflight `OPTIONS` gets
  the methods and the headers it asked for.
- `QueryRules`: a query parameter the API reads (`action`, `cam`, `format`) given twice is a
  400, never a silent pick. Other parameters (`cacheBust`, `timestamp`, …) are ignored.
- `AllowFrom`: on a non-loopback listening address only `allow_from` networks get an answer;
  the rest get 403.
- `metrics.RequestCounter`: every answer counted by route and status for `/metrics`.

JSON carries times as float seconds: a `*_ns` integer becomes `*_s`, and no integer above
2^53 (which JavaScript rounds) leaves the gateway.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import falcon
import falcon.media

from ..protocol.errors import FrameTimeout, ProtocolError, UnknownCamera
from . import resources as r
from .cache import FrameCache
from .config import GatewayConfig, Network
from .metrics import GatewayMetrics, MetricsResource, RequestCounter
from .mjpeg import FanoutRegistry, StreamSlots, StreamStats
from .quick import QuickLatest
from .whep import WebRtc, WebRtcStatus, WhepResource, WhepSessionResource

log = logging.getLogger(__name__)

# Every X-* header an answer may carry, plus Retry-After: what a page on another origin reads.
EXPOSED_HEADERS = ("X-Frame-Age-Ms", "X-Timestamp", "X-Frame-Width", "X-Frame-Height",
                   "X-Frame-Channels", "X-Frame-Dtype", "Retry-After",
                   "Location", "ETag", "Link", "Accept-Patch")  # WHEP's, read by the player
ALLOWED_METHODS = "GET, HEAD, OPTIONS, POST, PATCH, DELETE"  # the last three: WHEP only
PREFLIGHT_MAX_AGE_S = 600
READ_PARAMS = ("action", "cam", "format", "fps")
JS_SAFE_INT = 2**53


class Cors:
    """CORS for every answer, errors included, and the preflight answer."""

    expose = ", ".join(EXPOSED_HEADERS)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        resp.set_header("Access-Control-Allow-Origin", "*")
        resp.set_header("Access-Control-Expose-Headers", self.expose)
        if req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method"):
            resp.set_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
            asked = req.get_header("Access-Control-Request-Headers")
            if asked:
                resp.set_header("Access-Control-Allow-Headers", asked[:1000])
            resp.set_header("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE_S))


class QueryRules:
    """A parameter the API reads, given more than once, is ambiguous: 400 naming it."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not req.query_string:
            return
        for name in READ_PARAMS:
            value = req.params.get(name)
            if isinstance(value, list):
                raise falcon.HTTPBadRequest(
                    title="Repeated query parameter",
                    description=f"{name!r} is given {len(value)} times; give it once")


class AllowFrom:
    """Middleware answering 403 to clients outside the allowed networks."""

    # Clients remembered with their verdict: a keep-alive client or a polling dashboard asks
    # many times a second, and parsing its address and testing it against every network took
    # about as long as the rest of the Falcon request.
    REMEMBERED_CLIENTS = 4096

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks
        self._refused: set[str] = set()
        self.allowed = functools.lru_cache(maxsize=self.REMEMBERED_CLIENTS)(self._allowed)

    def _allowed(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address((address or "").split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.allowed(req.remote_addr):
            return
        if req.remote_addr not in self._refused and len(self._refused) < 1000:
            self._refused.add(req.remote_addr)
            log.warning("refused %s: not in gateway.allow_from", req.remote_addr)
        raise falcon.HTTPForbidden(title="Forbidden",
                                   description="this address is not in the gateway's allow_from")


def json_safe(value: Any) -> Any:
    """`value` with every `*_ns` integer turned into `*_s` float seconds and every other
    integer beyond 2^53 into a float, so JavaScript reads what was meant."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (isinstance(key, str) and key.endswith("_ns") and isinstance(item, int)
                    and not isinstance(item, bool)):
                out[key[:-3] + "_s"] = item / 1e9
            else:
                out[key] = json_safe(item)
        return out
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > JS_SAFE_INT:
        return float(value)
    return value


def _dumps(value: Any) -> str:
    return json.dumps(json_safe(value), ensure_ascii=False)


def _json_errors(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    body = exc.to_dict()
    if not body.get("description"):
        # HEAD is named as GET, so that HEAD announces exactly the length of GET's body.
        method = "GET" if req.method == "HEAD" else req.method
        body["description"] = f"{method} {req.path[:64]}: {exc.status}"
    resp.data = json.dumps(body).encode()
    resp.content_type = falcon.MEDIA_JSON
    resp.append_header("Vary", "Accept")


def _unknown_camera(req: falcon.Request, resp: falcon.Response, exc: UnknownCamera,
                    params: dict[str, Any], cache: FrameCache) -> None:
    known = ", ".join(str(c) for c in cache.camera_ids()) or "none yet"
    raise falcon.HTTPNotFound(title="Unknown camera",
                              description=f"no node announces camera {exc.cam} (known: {known})")


def _frame_timeout(req: falcon.Request, resp: falcon.Response, exc: FrameTimeout,
                   params: dict[str, Any]) -> None:
    raise falcon.HTTPServiceUnavailable(title="No fresh frame", description=str(exc),
                                        retry_after=r.RETRY_AFTER_S)


def _bad_frame(req: falcon.Request, resp: falcon.Response, exc: ProtocolError,
               params: dict[str, Any]) -> None:
    log.warning("cannot serve %s: %s", req.path[:64], exc)
    raise falcon.HTTPBadGateway(title="Bad frame", description=str(exc))


def create_app(
    cache: FrameCache,
    config: GatewayConfig | None = None,
    *,
    slots: StreamSlots | None = None,
    stopping: threading.Event | None = None,
    stats: StreamStats | None = None,
) -> falcon.App:
    """The WSGI app serving `cache`; `slots` caps MJPEG streams, `stopping` ends them,
    `stats` counts their clients and frames (the cache's fan-out's when not given)."""
    return build_app(cache, config, slots=slots, stopping=stopping, stats=stats)[0]


def build_app(
    cache: FrameCache,
    config: GatewayConfig | None = None,
    *,
    slots: StreamSlots | None = None,
    stopping: threading.Event | None = None,
    stats: StreamStats | None = None,
) -> tuple[falcon.App, QuickLatest]:
    """`create_app`'s app, and the quick answer of its `/latest` for the server (quick.py)."""
    config = config or GatewayConfig()
    stopping = stopping or threading.Event()
    stats = stats or FanoutRegistry.of(cache).stats  # one per cache: every stream counted once
    webrtc = WebRtc(cache, stopping, config.ice_servers)
    metrics = GatewayMetrics(cache, stats, stopping=stopping, webrtc=webrtc.viewers)
    middleware: list[Any] = [Cors(), RequestCounter(metrics), WebRtcStatus(webrtc)]
    allowed: Callable[[str], bool] = lambda address: True  # noqa: E731
    if not config.loopback_only:
        allow_from = AllowFrom(config.networks)
        middleware.append(allow_from)
        allowed = allow_from.allowed
    middleware.append(QueryRules())
    app = falcon.App(middleware=middleware, cors_enable=False)
    app.req_options.keep_blank_qs_values = False
    app.req_options.strip_url_path_trailing_slash = True
    json_handler = falcon.media.JSONHandler(dumps=_dumps)
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: json_handler})
    app.set_error_serializer(_json_errors)
    app.add_error_handler(UnknownCamera,
                          lambda req, resp, exc, params: _unknown_camera(req, resp, exc, params, cache))
    app.add_error_handler(FrameTimeout, _frame_timeout)
    app.add_error_handler(ProtocolError, _bad_frame)

    streams = r.Streams(cache, slots or StreamSlots(config.max_streams), stopping, stats)
    frames = r.Frames(cache, config.snap_timeout_s, config.stale_after_s)
    default = config.default_camera
    app.add_route("/", r.RootResource(frames, streams, default))
    app.add_route("/cameras", r.CacheViewResource(cache.registry))
    app.add_route("/snap/{cam_id}", r.SnapResource(frames))
    app.add_route(r.LATEST_ROUTE, r.LatestResource(frames))
    app.add_route("/cam/{cam_id}", r.CamStreamResource(frames, streams))
    app.add_route("/status", r.StatusResource(cache, stats))
    app.add_route("/frame/{cam_id}", r.FrameResource(frames))
    app.add_route("/world", r.CacheViewResource(cache.world))
    app.add_route("/scan", r.CacheViewResource(cache.scans))
    app.add_route("/snapshot.jpg", r.DefaultSnapshotResource(frames, default))
    app.add_route("/stream.mjpg", r.DefaultStreamResource(frames, streams, default))
    app.add_route("/metrics", MetricsResource(metrics))
    app.add_route("/static/{name}", r.StaticResource())
    app.add_route("/favicon.ico", r.StaticResource("favicon.svg"))
    app.add_route("/webrtc/{cam_id}/whep", WhepResource(webrtc))
    app.add_route("/webrtc/{cam_id}/whep/{session_id}", WhepSessionResource(webrtc))
    # The server's quick answer of /latest (quick.py), with what the middleware would add.
    cors = [("Access-Control-Allow-Origin", "*"), ("Access-Control-Expose-Headers", Cors.expose)]
    quick = QuickLatest(cache, frames.answered, allowed, metrics.count_request, cors)
    return app, quick
