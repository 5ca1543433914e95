"""A reader that takes one MJPEG part every PERIOD seconds, on a fixed schedule, as robot code
doing a fixed amount of work per frame does; run on a simulated host (from the repository's
root): `python -m tests.gateway.paced_reader URL PERIOD SECONDS`.

URL may carry a query (`/cam/0?fps=0.5`). It parses parts by Content-Length with the system's
default receive buffer, and prints one JSON line per part: its age (now − X-Timestamp; the
reader and the gateway share this machine's clock)."""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

from tests.gateway.support import RawHttp, read_part_by_length


def main(url: str, period: float, seconds: float) -> None:
    where = urlsplit(url)
    path = where.path + (f"?{where.query}" if where.query else "")
    conn = RawHttp(f"http://{where.netloc}/", path, timeout=10.0)
    start = time.monotonic()
    try:
        for k in range(int(seconds / period)):
            time.sleep(max(0.0, start + k * period - time.monotonic()))
            part = read_part_by_length(conn)
            print(json.dumps({"age_s": time.time() - part.timestamp}), flush=True)
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
