"""create_app: the gateway's Falcon application over a FrameCache.

Routes are ARCHITECTURE.md's HTTP table. Our exceptions become HTTP here, once:
`UnknownCamera` → 404, `FrameTimeout` → 503 with Retry-After, `ProtocolError` (a JPEG that
does not decode) → 502. Every error body is Falcon's JSON `{"title", "description"}` — never
HTML, never a traceback. On a non-loopback listening address only `allow_from` networks get an
answer; the rest get 403.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import threading
from typing import Any

import falcon

from ..protocol.errors import FrameTimeout, ProtocolError, UnknownCamera
from . import resources as r
from .cache import FrameCache
from .config import GatewayConfig, Network
from .mjpeg import StreamSlots

log = logging.getLogger(__name__)


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


def _json_errors(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    body = exc.to_dict()
    if not body.get("description"):
        body["description"] = f"{req.method} {req.path}: {exc.status}"
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
    log.warning("cannot serve %s: %s", req.path, exc)
    raise falcon.HTTPBadGateway(title="Bad frame", description=str(exc))


def create_app(
    cache: FrameCache,
    config: GatewayConfig | None = None,
    *,
    slots: StreamSlots | None = None,
    stopping: threading.Event | None = None,
) -> falcon.App:
    """The WSGI app serving `cache`; `slots` caps MJPEG streams, `stopping` ends them."""
    config = config or GatewayConfig()
    middleware = [] if config.loopback_only else [AllowFrom(config.networks)]
    app = falcon.App(middleware=middleware, cors_enable=False)
    app.req_options.keep_blank_qs_values = False
    app.set_error_serializer(_json_errors)
    app.add_error_handler(UnknownCamera,
                          lambda req, resp, exc, params: _unknown_camera(req, resp, exc, params, cache))
    app.add_error_handler(FrameTimeout, _frame_timeout)
    app.add_error_handler(ProtocolError, _bad_frame)

    streams = r.Streams(cache, slots or StreamSlots(config.max_streams), stopping or threading.Event())
    timeout = config.snap_timeout_s
    default = config.default_camera
    app.add_route("/", r.RootResource(cache, streams, default))
    app.add_route("/cameras", r.CamerasResource(cache))
    app.add_route("/snap/{cam_id}", r.SnapResource(cache, timeout))
    app.add_route("/latest/{cam_id}", r.LatestResource(cache))
    app.add_route("/cam/{cam_id}", r.CamStreamResource(streams))
    app.add_route("/status", r.StatusResource(cache))
    app.add_route("/frame/{cam_id}", r.FrameResource(cache, timeout))
    app.add_route("/world", r.WorldResource(cache))
    app.add_route("/scan", r.ScanResource(cache))
    app.add_route("/snapshot.jpg", r.DefaultSnapshotResource(cache, default))
    app.add_route("/stream.mjpg", r.DefaultStreamResource(streams, default))
    app.add_route("/static/{name}", r.StaticResource())
    return app
