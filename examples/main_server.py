"""The robot cell's main server (:8080) with the seed's proxy routes, written with cam_snap().

    python examples/main_server.py                            # proxies `make demo`'s gateway
    python examples/main_server.py --gateway http://10.0.0.5:8081 --port 8080

    GET /snap/{cam_id}   -> :8081/snap/{cam_id}    a JPEG captured after the request
    GET /cameras         -> :8081/cameras          the camera registry
    GET /latest/{cam_id} -> :8081/latest/{cam_id}  the cached JPEG, with X-Frame-Age-Ms

Errors keep their meaning: an unknown camera is 404, no frame yet 503 with Retry-After, a
gateway that does not answer 502 — each as JSON.
"""

from __future__ import annotations

import argparse
import math

import falcon
import waitress

from camfabric.client import FrameUnavailable, GatewayClient, GatewayError, UnknownCamera

IMAGE_HEADERS = {"Cache-Control": "no-cache"}


def create_app(cams: GatewayClient) -> falcon.App:
    """The main server's camera routes, every camera access through `cams`."""

    class Snap:
        def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: int) -> None:
            resp.data, resp.content_type = cams.cam_snap(cam_id), "image/jpeg"
            resp.set_headers(IMAGE_HEADERS)

    class Latest:
        def on_get(self, req: falcon.Request, resp: falcon.Response, cam_id: int) -> None:
            shot = cams.latest(cam_id)
            resp.data, resp.content_type = shot.jpeg, "image/jpeg"
            resp.set_headers({**IMAGE_HEADERS, "X-Frame-Age-Ms": str(round(shot.age_now_ms()))})

    class Cameras:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {str(cam): entry for cam, entry in cams.cameras().items()}

    def unknown(req, resp, exc: UnknownCamera, params) -> None:
        raise falcon.HTTPNotFound(title="Unknown camera", description=str(exc))

    def unavailable(req, resp, exc: FrameUnavailable, params) -> None:
        retry = math.ceil(exc.retry_after) if exc.retry_after is not None else 1
        raise falcon.HTTPServiceUnavailable(title="No frame", description=str(exc), retry_after=retry)

    def bad_gateway(req, resp, exc: GatewayError, params) -> None:
        raise falcon.HTTPBadGateway(title="Camera service", description=str(exc))

    app = falcon.App(cors_enable=True)
    app.add_route("/snap/{cam_id:int(min=0)}", Snap())
    app.add_route("/latest/{cam_id:int(min=0)}", Latest())
    app.add_route("/cameras", Cameras())
    app.add_error_handler(GatewayError, bad_gateway)
    app.add_error_handler(UnknownCamera, unknown)
    app.add_error_handler(FrameUnavailable, unavailable)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8081", help="camera service URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    with GatewayClient(args.gateway) as cams:
        server = waitress.create_server(create_app(cams), host=args.host, port=args.port, threads=8)
        # The port it got (--port 0 picks a free one), once it listens.
        print(f"main server on http://{args.host}:{server.effective_port}/ proxying {args.gateway}",
              flush=True)
        server.run()


if __name__ == "__main__":
    main()
