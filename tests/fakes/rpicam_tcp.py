"""A fake `rpicam-vid --codec mjpeg --listen -o tcp://HOST:PORT`, as a class and as a program.

Like the real one it listens, accepts one client, streams whole JPEGs back to back at the
frame rate, and ends when that client goes away. On command it misbehaves the ways a real
stream can: writes split at random places, garbage between frames, a frame cut short (the
next one follows), and a sender that dies mid-frame and comes back on the same port.

    server = RpicamTcpServer(numbered_jpegs(20)).start()
    server.truncate_next(); server.garbage_next(); server.drop_mid_frame(down_s=0.3)
    server.sent            # indices of the frames sent whole, in order

Run as a program it is a stand-in `rpicam-vid` executable: it parses the real flags, writes
libcamera-like lines and per-frame progress to stderr, and serves the stream. Environment
variables make it fail on purpose:

    FAKE_RPICAM_STARTS=FILE        append one line per start (to count restarts)
    FAKE_RPICAM_NO_CAMERA=1        exit 255 with rpicam-vid's "no cameras available" error
    FAKE_RPICAM_CRASH_AFTER=N      after N frames send half a frame and exit 1
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # when run as a program

from camfabric.protocol.jpeg import encode_jpeg  # noqa: E402


def numbered_jpegs(count: int, width: int = 160, height: int = 120, quality: int = 80) -> list[bytes]:
    """`count` distinct real JPEGs, each showing its number over a textured background."""
    rng = np.random.default_rng(count * 7919 + width)
    frames = []
    for i in range(count):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        cv2.putText(image, str(i), (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.4, height / 80), (255, 255, 255), 2)
        frames.append(encode_jpeg(image, quality))
    return frames


def garbage(rng: random.Random, size: int) -> bytes:
    """Random bytes that hold no JPEG start (FFD8), like noise between frames."""
    data = bytes(rng.getrandbits(8) for _ in range(size))
    return data.replace(b"\xff\xd8", b"\xfe\xd8")


class RpicamTcpServer:
    """A loopback TCP server streaming JPEGs to one client at a time, with faults on command."""

    def __init__(self, jpegs: Sequence[bytes], *, host: str = "127.0.0.1", port: int = 0,
                 fps: float = 100.0, seed: int = 1) -> None:
        self.jpegs = list(jpegs)
        self.host = host
        self.fps = fps
        self.rng = random.Random(seed)
        self.sent: list[int] = []          # frames written whole
        self.cut: list[int] = []           # frames written only in part
        self.connections = 0
        self.split_writes = False
        self._faults: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = self._listen(port)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name="fake-rpicam", daemon=True)

    # -- control -------------------------------------------------------------------------------
    def start(self) -> RpicamTcpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close(self._listener)
        self._thread.join(2.0)

    def __enter__(self) -> RpicamTcpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def garbage_next(self) -> None:
        """Write random non-JPEG bytes before the next frame."""
        self._add("garbage")

    def truncate_next(self) -> None:
        """Write only part of the next frame, then carry on with the one after."""
        self._add("truncate")

    def drop_mid_frame(self, down_s: float = 0.2) -> None:
        """Write part of the next frame, close the connection and stop listening for `down_s`."""
        self._add("drop", down_s)

    def wait_sent(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until `count` whole frames have been written in all."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- serving -------------------------------------------------------------------------------
    def _add(self, fault: str, arg: float = 0.0) -> None:
        with self._lock:
            self._faults.append((fault, arg))

    def _next_fault(self) -> tuple[str, float] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.listen(1)
        sock.settimeout(0.05)
        return sock

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed by stop()
            self.connections += 1
            client.settimeout(2.0)
            down_s = None
            with client:
                try:
                    index, down_s = self._stream(client, index)
                except OSError:
                    pass  # the client went away, as rpicam-vid's clients do
            if down_s is not None:
                # Like rpicam-vid dying and being restarted: nobody listens for a while.
                self._close(self._listener)
                if self._stop.wait(down_s):
                    return
                self._listener = self._listen(self.port)

    def _stream(self, client: socket.socket, index: int) -> tuple[int, float | None]:
        period = 1.0 / self.fps
        next_at = time.monotonic()
        while not self._stop.is_set():
            frame = self.jpegs[index % len(self.jpegs)]
            fault = self._next_fault()
            if fault and fault[0] == "garbage":
                self._write(client, garbage(self.rng, self.rng.randint(1, 3000)))
            if fault and fault[0] in ("truncate", "drop"):
                self._write(client, frame[: self.rng.randint(2, len(frame) - 2)])
                self.cut.append(index)
                if fault[0] == "drop":
                    return index + 1, fault[1]
            else:
                self._write(client, frame)
                self.sent.append(index)
            index += 1
            next_at += period
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                break
        return index, None

    def _write(self, client: socket.socket, data: bytes) -> None:
        if not self.split_writes:
            client.sendall(data)
            return
        pos = 0
        while pos < len(data):
            step = self.rng.choice((1, 2, 3, self.rng.randint(4, 5000)))
            client.sendall(data[pos : pos + step])
            pos += step

    @staticmethod
    def _close(sock: socket.socket) -> None:
        try:
            sock.close()
        except OSError:
            pass


# -- the stand-in executable --------------------------------------------------------------------
def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rpicam-vid", add_help=False)
    parser.add_argument("-t", "--timeout", default="5000")
    parser.add_argument("--codec", default="h264")
    parser.add_argument("-l", "--listen", action="store_true")
    parser.add_argument("-o", "--output", default="")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--framerate", type=float, default=30.0)
    parser.add_argument("-n", "--nopreview", action="store_true")
    parser.add_argument("-v", "--verbose", type=int, default=1)
    parser.add_argument("-q", "--quality", type=int, default=93)
    parser.add_argument("--camera", type=int, default=0)
    parser.add_argument("--inline", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _die(f"unrecognised option '{unknown[0]}'", 255)
    return args


def _die(message: str, status: int) -> None:
    print(f"ERROR: *** {message} ***", file=sys.stderr, flush=True)
    sys.exit(status)


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    if starts := os.environ.get("FAKE_RPICAM_STARTS"):
        with open(starts, "a") as fh:
            fh.write(f"{time.time()} {' '.join(argv)}\n")
    print("[0:00:00.100000000] [4242]  INFO Camera camera_manager.cpp:327 libcamera v0.3.2+rpt",
          file=sys.stderr, flush=True)
    if os.environ.get("FAKE_RPICAM_NO_CAMERA"):
        _die("no cameras available", 255)
    if args.codec != "mjpeg" or not args.listen or not args.output.startswith("tcp://"):
        _die("this stand-in serves only --codec mjpeg --listen -o tcp://HOST:PORT", 255)
    host, _, port = args.output[len("tcp://"):].rpartition(":")
    jpegs = numbered_jpegs(10, args.width, args.height, args.quality)
    crash_after = int(os.environ.get("FAKE_RPICAM_CRASH_AFTER", "0"))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(1)
    client, _ = listener.accept()
    listener.close()
    period = 1.0 / args.framerate
    next_at = time.monotonic()
    try:
        for n in range(10**9):
            frame = jpegs[n % len(jpegs)]
            if crash_after and n == crash_after:
                client.sendall(frame[: len(frame) // 2])
                _die("camera frontend has timed out!", 1)
            client.sendall(frame)
            if args.verbose:
                print(f"#{n} ({1 / period:.2f} fps) exp 33251.00 ag 8.00 dg 1.00",
                      file=sys.stderr, flush=True)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
    except OSError:
        _die("failed to send data on socket", 255)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
