"""A slow MJPEG reader, run on a simulated host (from the repository's root):
`python -m tests.faults.slow_reader URL PERIOD SECONDS [RCVBUF]`.

It reads one part of URL's stream every PERIOD seconds (0: as fast as they come), parsing by
Content-Length (tests/gateway/support.py), with a receive buffer of RCVBUF bytes (default: the
system's, which Linux grows as it sees fit), and prints one JSON line per part: its age (now −
X-Timestamp; the reader and the gateway share this machine's clock)."""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

from tests.gateway.support import RawHttp, read_part_by_length


def main(url: str, period: float, seconds: float, rcvbuf: int | None) -> None:
    where = urlsplit(url)
    conn = RawHttp(f"http://{where.netloc}/", where.path, rcvbuf=rcvbuf, timeout=10.0)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            part = read_part_by_length(conn)
            print(json.dumps({"age_s": time.time() - part.timestamp}), flush=True)
            time.sleep(period)
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]),
         int(sys.argv[4]) if len(sys.argv) > 4 and int(sys.argv[4]) else None)
