"""Three cameras' frames captured together, saved to disk: one PNG per camera and a JSON note.

    python examples/synced_triple.py                          # `make demo`'s node, cameras 0 1 2
    python examples/synced_triple.py tcp://10.0.0.5:5550 tcp://10.0.0.6:5550 --out shots

Frames are matched on this host's clock, so nodes on several hosts need no clock sync. By
default a set's frames lie within half the slowest camera's frame interval; free-running
cameras may sit further apart than that (three of them up to two thirds of an interval), so
pass --tolerance-ms (one interval, e.g. 67 at 15 fps) if no set forms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2

from camfabric import protocol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoints", nargs="*", default=[protocol.DEFAULT_ENDPOINT],
                        help="fabric endpoints of the nodes (default: %(default)s)")
    parser.add_argument("--cameras", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("triple"), help="folder to write into")
    parser.add_argument("--tolerance-ms", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    with protocol.Subscriber(args.endpoints, cameras=args.cameras, encoding="bgr8") as sub:
        try:
            frames = sub.synced(args.cameras, tolerance_ms=args.tolerance_ms, timeout=args.timeout)
        except protocol.SyncTimeout as exc:
            print(f"no synchronised set: {exc}", file=sys.stderr)
            return 1
        now = time.monotonic_ns()
        args.out.mkdir(parents=True, exist_ok=True)
        note = {"spread_ms": frames.spread_ns / 1e6, "tolerance_ms": frames.tolerance_ns / 1e6,
                "cameras": {}}
        for cam, frame in frames.items():
            path = args.out / f"cam{cam}.png"
            if not cv2.imwrite(str(path), frame.image):
                print(f"could not write {path}", file=sys.stderr)
                return 1
            note["cameras"][str(cam)] = {
                "file": path.name, "seq": frame.seq, "node": frame.node,
                "t_capture": frame.t_capture_ns / 1e9,  # the node's own wall clock
                "offset_ms": (frames.captured_ns[cam] - frames.t_capture_ns) / 1e6,
                "age_ms": frame.age_ns(now) / 1e6,
            }
        (args.out / "set.json").write_text(json.dumps(note, indent=2))
    print(f"wrote {len(frames)} frames {frames.spread_ns / 1e6:.1f} ms apart to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
