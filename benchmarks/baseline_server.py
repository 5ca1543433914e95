"""The first seed's design, for comparison: a ThreadingHTTPServer serving one cached frame.

A background reader keeps the newest JPEG per camera in memory (here fed from the fabric by a
camfabric Subscriber, so both servers get the same JPEG bytes); `/latest/{id}` returns it and
`/cam/{id}` streams it as MJPEG. Run: python baseline_server.py PORT ENDPOINT [nodelay]

As written, it sends the response head and the JPEG in two writes, so Nagle's algorithm and
the client's delayed ACK can hold the JPEG back ~40 ms. `nodelay` sets TCP_NODELAY: the same
design at its best, so that comparisons do not rest on that stall. PORT 0 picks a free port;
the server prints the one it listens on.
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from camfabric import protocol


class Cache:
    def __init__(self) -> None:
        self.frames: dict[int, protocol.Frame] = {}
        self.cond = threading.Condition()

    def put(self, msg: protocol.Message) -> None:
        if isinstance(msg, protocol.Frame):
            frame = protocol.Frame(cam=msg.cam, seq=msg.seq, t_capture_ns=msg.t_capture_ns,
                                   w=msg.w, h=msg.h, encoding=msg.encoding, data=bytes(msg.data),
                                   t_publish_ns=msg.t_publish_ns, t_receive_ns=msg.t_receive_ns)
            with self.cond:
                self.frames[msg.cam] = frame
                self.cond.notify_all()


CACHE = Cache()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("latest", "cam") or not parts[1].isdigit():
            self.send_error(404)
            return
        cam = int(parts[1])
        if parts[0] == "latest":
            frame = CACHE.frames.get(cam)
            if frame is None:
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(frame.data)))
            self.send_header("X-Timestamp", f"{frame.t_capture_ns / 1e9:.6f}")
            self.end_headers()
            self.wfile.write(frame.data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        last = None
        try:
            while True:
                with CACHE.cond:
                    CACHE.cond.wait_for(lambda prev=last: CACHE.frames.get(cam) is not prev, timeout=5)
                    frame = CACHE.frames.get(cam)
                if frame is None or frame is last:
                    continue
                last = frame
                head = (f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.data)}"
                        f"\r\nX-Timestamp: {frame.t_capture_ns / 1e9:.6f}\r\n\r\n").encode()
                self.wfile.write(head + frame.data + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return


def main() -> None:
    port, endpoint = int(sys.argv[1]), sys.argv[2]
    sub = protocol.Subscriber(endpoint)
    sub.add_listener(CACHE.put)
    sub.start()
    Handler.disable_nagle_algorithm = len(sys.argv) > 3 and sys.argv[3] == "nodelay"
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"baseline serving http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # clients hanging up mid-stream
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        server.shutdown()
        sub.close()


if __name__ == "__main__":
    main()
