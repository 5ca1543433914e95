"""The robot cell's main server (:8080) with the seed's proxy routes, written with cam_snap().

    python examples/main_server.py                            # proxies `make demo`'s gateway
    python examples/main_server.py --gateway http://10.0.0.5:8081 --port 8080

    GET /snap/{cam_id}   -> :8081/snap/{cam_id}    a JPEG captured after the request
    GET /cameras         -> :8081/cameras          the camera registry
    GET /latest/{cam_id} -> :8081/latest/{cam_id}  the cached JPEG, with X-Frame-Age-Ms

Errors keep their meaning: an unknown camera is 404, no frame yet 503 with Retry-After, a
request the gateway refuses keeps its 4xx and the gateway's description, a gateway that does
not answer 502 — each as JSON, none echoing more than a few characters of the path. Every
route answers HEAD as GET, without the body.
"""

from __future__ import annotations

import argparse
import math

import falcon
import waitress

from camfabric.client import FrameUnavailable, GatewayClient, GatewayError, InvalidRequest, UnknownCamera

IMAGE_HEADERS = {"Cache-Control": "no-cache"}
DESCRIPTION_CHARS = 200
# More digits than this cannot be a camera id (and Python refuses to read 4300 or more).
MAX_ID_DIGITS = 100


def create_app(cams: GatewayClient) -> falcon.App:
    """The main server's camera routes, every camera access through `cams`."""

    class Snap:
        def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
            resp.data, resp.content_type = cams.cam_snap(_camera(cam_id)), "image/jpeg"
            resp.set_headers(IMAGE_HEADERS)

        on_head = on_get

    class Latest:
        def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: str) -> None:
            shot = cams.latest(_camera(cam_id))
            resp.data, resp.content_type = shot.jpeg, "image/jpeg"
            resp.set_headers({**IMAGE_HEADERS, "X-Frame-Age-Ms": str(round(shot.age_now_ms()))})

        on_head = on_get

    class Cameras:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {str(cam): entry for cam, entry in cams.cameras().items()}

        on_head = on_get

    def unknown(req, resp, exc: UnknownCamera, params) -> None:
        raise falcon.HTTPNotFound(title="Unknown camera", description=str(exc))

    def unavailable(req, resp, exc: FrameUnavailable, params) -> None:
        retry = math.ceil(exc.retry_after) if exc.retry_after is not None else 1
        raise falcon.HTTPServiceUnavailable(title="No frame", description=str(exc), retry_after=retry)

    def bad_gateway(req, resp, exc: GatewayError, params) -> None:
        if exc.status is not None and 400 <= exc.status < 500:  # the gateway refused the request
            raise falcon.HTTPError(exc.status, title="Camera service refused the request",
                                   description=_short(exc.description or str(exc)))
        if isinstance(exc, InvalidRequest):  # refused by the client before it was sent
            raise falcon.HTTPBadRequest(title="Bad request", description=_short(str(exc)))
        raise falcon.HTTPBadGateway(title="Camera service", description=_short(str(exc)))

    app = falcon.App(cors_enable=True)
    app.add_route("/snap/{cam_id}", Snap())
    app.add_route("/latest/{cam_id}", Latest())
    app.add_route("/cameras", Cameras())
    app.add_error_handler(GatewayError, bad_gateway)
    app.add_error_handler(UnknownCamera, unknown)
    app.add_error_handler(FrameUnavailable, unavailable)
    return app


def _camera(value: str) -> int:
    """The camera id in a path; what is plainly no id is refused here, the rest by the gateway."""
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_ID_DIGITS:
        raise falcon.HTTPBadRequest(title="Bad camera id",
                                    description=f"a camera id is a non-negative integer of at most "
                                                f"{MAX_ID_DIGITS} digits, got {_short(value, 12)!r}")
    return int(value)


def _short(text: str, chars: int = DESCRIPTION_CHARS) -> str:
    return text if len(text) <= chars else text[:chars] + "…"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8081", help="camera service URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    with GatewayClient(args.gateway) as cams:
        server = waitress.create_server(create_app(cams), host=args.host, port=args.port, threads=8)
        # The port it really listens on (--port 0 picks a free one).
        print(f"main server on http://{args.host}:{server.effective_port}/ proxying {args.gateway}",
              flush=True)
        server.run()


if __name__ == "__main__":
    main()
