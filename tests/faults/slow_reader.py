"""A slow MJPEG reader, run on a simulated host:
`python slow_reader.py URL PERIOD SECONDS [RCVBUF]`.

It reads one part every PERIOD seconds (0: as fast as they come), parsing by Content-Length,
with a receive buffer of RCVBUF bytes (default: the system's, which Linux grows as it sees
fit), and prints one JSON line per part: its age (now − X-Timestamp; the reader and the
gateway share this machine's clock)."""

from __future__ import annotations

import json
import socket
import sys
import time
from urllib.parse import urlsplit


def main(url: str, period: float, seconds: float, rcvbuf: int | None) -> None:
    where = urlsplit(url)
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((where.hostname, where.port))
    sock.sendall(f"GET {where.path} HTTP/1.0\r\nHost: {where.hostname}\r\n\r\n".encode())
    buffer = b""

    def until(marker: bytes) -> bytes:
        nonlocal buffer
        while (i := buffer.find(marker)) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("the gateway closed the stream")
            buffer += chunk
        data, buffer = buffer[:i], buffer[i + len(marker):]
        return data

    until(b"\r\n\r\n")  # the response headers
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        until(b"--frame\r\n")
        lines = until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        while len(buffer) < int(headers["content-length"]):
            buffer += sock.recv(65536)
        print(json.dumps({"age_s": time.time() - float(headers["x-timestamp"])}), flush=True)
        time.sleep(period)
    sock.close()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]),
         int(sys.argv[4]) if len(sys.argv) > 4 else None)
