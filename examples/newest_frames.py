"""The newest frame of each camera as a numpy array, straight from the fabric (no HTTP).

    python examples/newest_frames.py                          # `make demo`'s node, cameras 0 1 2
    python examples/newest_frames.py tcp://10.0.0.5:5550 --cameras 0 2 --count 10

Each line: camera, sequence number, image shape, mean grey level and the frame's age — the
true age on this host's clock, however far the node's clock is off.
"""

from __future__ import annotations

import argparse
import sys

from camfabric import protocol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoints", nargs="*", default=[protocol.DEFAULT_ENDPOINT],
                        help="fabric endpoints of the nodes (default: %(default)s)")
    parser.add_argument("--cameras", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--count", type=int, default=3, help="new frames to show per camera")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    with protocol.Subscriber(args.endpoints, cameras=args.cameras, encoding="bgr8") as sub:
        last: dict[int, protocol.Frame] = {}
        for _ in range(args.count):
            for cam in args.cameras:
                try:
                    frame = sub.latest(cam, timeout=args.timeout, newer_than=last.get(cam))
                except protocol.FrameTimeout as exc:
                    print(f"camera {cam}: {exc}", file=sys.stderr)
                    return 1
                image = frame.image  # numpy (h, w, 3) uint8, BGR
                print(f"camera {cam} seq {frame.seq}: {image.shape} mean {image.mean():.1f}, "
                      f"{frame.age_ns() / 1e6:.0f} ms old")
                last[cam] = frame
    return 0


if __name__ == "__main__":
    sys.exit(main())
