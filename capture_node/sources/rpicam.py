"""A Raspberry Pi camera through `rpicam-vid --codec mjpeg --listen -o tcp://…`.

    [node.cameras.source]
    kind = "rpicam"          # starts and supervises rpicam-vid on 127.0.0.1:9000
    args = ["--camera", "0", "--quality", "90"]

    [node.cameras.source]
    kind = "rpicam"          # H.264 from the Pi's encoder, passed through for WebRTC viewers
    codec = "h264"           # (decoded on the node only for JPEG and raw consumers)

    [node.cameras.source]
    kind = "rpicam"          # or reads an rpicam-vid someone else started
    spawn = false
    port = 9000

`rpicam-vid --listen` serves one client and exits when that client goes away, so with
`spawn = true` every `open()` starts a fresh process (after a backoff that grows while it keeps
dying young), connects to it, and `close()` stops it. Its stderr lines go to this module's log;
its last lines are kept to explain why it died.

One background reader per connection drains the socket into a `JpegSplitter` and keeps the
newest complete JPEG (`FrameSlot`): frames are passed through untouched, never decoded, never
queued. With `codec = "h264"` an `H264Splitter` cuts the stream into access units instead,
which a `UnitQueue` hands over in order (a video stream cannot skip one), bounded. A connection
that ends — the process died, the sender stopped mid-frame, no bytes for `read_timeout_s` —
makes `read()` raise SourceError, and the capture loop reopens with backoff.
"""

from __future__ import annotations

import collections
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ...protocol.security import is_loopback_endpoint
from ...runtime.backoff import Backoff
from ...runtime.config import bounded
from ...runtime.errors import ConfigError
from ..errors import SourceError
from ..source import Capture, ProbeReport, Source
from .h264_stream import H264Splitter, UnitQueue
from .jpeg_stream import FrameSlot, JpegSplitter, StreamReader, frame_size, read_chunks

log = logging.getLogger(__name__)

# rpicam-vid's per-frame progress lines ("#42 (30.00 fps) exp 33251.00 ag 8.00 dg 1.00").
_PROGRESS = re.compile(r"^#\d+ \(")
# A process that lived this long was healthy: its next restart needs no extra backoff.
HEALTHY_RUN_S = 10.0


@dataclass(frozen=True, slots=True)
class Options:
    """The `[node.cameras.source]` table of an rpicam camera (besides `kind`)."""

    spawn: bool = True
    host: str = "127.0.0.1"
    port: int = bounded(9000, 1, 65535)
    command: str = "rpicam-vid"
    args: tuple[str, ...] = ()
    connect_timeout_s: float = bounded(2.0, 0.05, 60.0)
    startup_timeout_s: float = bounded(10.0, 0.1, 120.0)
    read_timeout_s: float = bounded(5.0, 0.1, 120.0)
    restart_backoff_s: float = bounded(1.0, 0.0, 60.0)
    restart_backoff_max_s: float = bounded(30.0, 0.0, 600.0)
    codec: str = "mjpeg"

    def __post_init__(self) -> None:
        if self.codec not in ("mjpeg", "h264"):
            raise ConfigError("codec", f"must be \"mjpeg\" or \"h264\", got {self.codec!r}")
        if self.spawn and not is_loopback_endpoint(f"tcp://{self.host}:{self.port}"):
            raise ConfigError("host", f"{self.host} is beyond loopback: rpicam-vid would serve the "
                              "camera unencrypted to the network; a spawned rpicam-vid listens on "
                              "127.0.0.1 only")
        reserved = {"-o", "--output", "--listen", "-l", "--codec", "--width", "--height",
                    "--framerate", "-t", "--timeout", "--inline", "--intra"}
        for i, arg in enumerate(self.args):
            if arg.split("=", 1)[0] in reserved:
                raise ConfigError(f"args[{i}]", f"{arg!r} is set by camfabric from the camera's "
                                  "resolution, fps, host and port")
        if self.restart_backoff_max_s < self.restart_backoff_s:
            raise ConfigError("restart_backoff_max_s", "must be >= restart_backoff_s")


def rpicam_argv(options: Options, width: int, height: int, fps: float) -> list[str]:
    """The rpicam-vid command line for one camera (the first seed's pipeline)."""
    # H.264: SPS/PPS with every keyframe (--inline), one a second (--intra), as the fabric wants.
    h264 = ["--inline", "--intra", str(max(1, round(fps)))] if options.codec == "h264" else []
    return [
        options.command, "-t", "0", "--codec", options.codec, *h264, "--listen",
        "-o", f"tcp://{options.host}:{options.port}",
        "--width", str(width), "--height", str(height), "--framerate", f"{fps:g}",
        "--nopreview", *options.args,
    ]


class RpicamProcess:
    """One supervised rpicam-vid at a time: started, its stderr logged, stopped, and restarted
    no sooner than a backoff that doubles each time it dies by itself soon after starting."""

    def __init__(self, argv: list[str], backoff_s: float, backoff_max_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.argv = argv
        # No jitter: one process per camera, nothing to spread out.
        self.backoff = Backoff(base_s=backoff_s, cap_s=backoff_max_s, jitter=0.0)
        self._quick_deaths = 0
        self.clock = clock
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._next_start_at = 0.0
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._pump: threading.Thread | None = None

    def start_delay(self) -> float:
        """Seconds to wait before the next start is allowed."""
        return max(0.0, self._next_start_at - self.clock())

    def start(self) -> None:
        executable = shutil.which(self.argv[0])
        if executable is None:
            raise SourceError(f"{self.argv[0]} not found (is rpicam-apps installed? "
                              "set source.command to its path)")
        self._stderr.clear()
        log.info("starting %s", " ".join(self.argv))
        try:
            self._proc = subprocess.Popen([executable, *self.argv[1:]], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            raise SourceError(f"cannot start {self.argv[0]}: {exc}") from exc
        self.starts += 1
        self._started_at = self.clock()
        self._pump = threading.Thread(target=self._log_stderr, args=(self._proc,),
                                      name="camfabric-rpicam-stderr", daemon=True)
        self._pump.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exited(self, timeout: float) -> bool:
        """Whether the process has ended, waiting up to `timeout` s for it to."""
        if self._proc is None:
            return False
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def exit_reason(self) -> str:
        """Why the process is not running: its exit status and last stderr line."""
        if self._proc is None:
            return f"{self.argv[0]} not started"
        status = self._proc.poll()
        if status is None:
            return f"{self.argv[0]} is running"
        if self._pump is not None:
            self._pump.join(0.5)  # let the last stderr lines arrive
        last = next((line for line in reversed(self._stderr) if not _PROGRESS.match(line)), "")
        return f"{self.argv[0]} exited with status {status}" + (f": {last}" if last else "")

    def stop(self, timeout: float = 1.5) -> None:
        """Terminate (then kill) the process; set the backoff for the next start."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        died_by_itself = proc.poll() is not None
        if not died_by_itself:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.1f s, killing it", self.argv[0], timeout)
                proc.kill()
                proc.wait(timeout)
        if self._pump is not None:
            self._pump.join(timeout)
        if proc.stderr is not None:
            proc.stderr.close()
        lived = self.clock() - self._started_at
        if died_by_itself and lived < HEALTHY_RUN_S:
            self._quick_deaths += 1
            delay = self.backoff.delay(self._quick_deaths)
        else:  # it ran well, or we stopped it (a probe, a read timeout): no penalty
            self._quick_deaths = 0
            delay = 0.0
        self._next_start_at = self.clock() + delay

    def _log_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._stderr.append(line)
            if _PROGRESS.match(line):
                log.debug("rpicam-vid: %s", line)
            elif "ERROR" in line or "WARN" in line:
                log.warning("rpicam-vid: %s", line)
            else:
                log.info("rpicam-vid: %s", line)


class RpicamSource(Source):
    """JPEGs (or, with codec = "h264", H.264 access units) from rpicam-vid's TCP stream,
    passed through as they arrive."""

    kind = "rpicam"

    def __init__(self, options: Options, width: int, height: int, fps: float) -> None:
        self.options = options
        self.width, self.height, self.fps = width, height, fps
        self.argv = rpicam_argv(options, width, height, fps)
        self.process = (RpicamProcess(self.argv, options.restart_backoff_s,
                                      options.restart_backoff_max_s) if options.spawn else None)
        self._interrupted = threading.Event()
        self._sock: socket.socket | None = None
        self._reader: StreamReader | None = None
        self._slot: FrameSlot | UnitQueue = FrameSlot()
        self._splitter: JpegSplitter | H264Splitter = JpegSplitter()
        self.h264 = options.codec == "h264"

    @property
    def device(self) -> str:
        address = f"tcp://{self.options.host}:{self.options.port}"
        return f"rpicam-vid {address}" if self.options.spawn else address

    def open(self) -> None:
        self.close()
        self._interrupted.clear()
        if self.process is not None:
            delay = self.process.start_delay()
            if delay > 0:
                log.info("restarting %s in %.1f s", self.options.command, delay)
                if self._interrupted.wait(delay):
                    raise SourceError(f"{self.device}: open interrupted")
            self.process.start()
        try:
            self._sock = self._connect()
        except SourceError:
            self.close()
            raise
        self._slot = UnitQueue() if self.h264 else FrameSlot()
        self._splitter = H264Splitter() if self.h264 else JpegSplitter()
        self._reader = StreamReader(f"rpicam {self.options.host}:{self.options.port}",
                                    self._frames, self._shutdown_socket, self._slot).start()

    def read(self, timeout: float) -> Capture:
        try:
            taken = self._slot.take(timeout, self.device)
        except SourceError as exc:
            # The stream ending is usually the process ending: say why it did.
            if self.process is not None and self._slot.failed and self.process.exited(0.5):
                raise SourceError(f"{exc}; {self.process.exit_reason()}") from None
            raise
        if self.h264:  # the size is what rpicam-vid was asked for: no SPS parsing here
            unit, key, t_capture_ns = taken
            return Capture(t_capture_ns=t_capture_ns, w=self.width, h=self.height, h264=unit, key=key)
        jpeg, t_capture_ns = taken
        w, h = frame_size(jpeg)
        return Capture(t_capture_ns=t_capture_ns, w=w, h=h, jpeg=jpeg)

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stop()
        self._shutdown_socket()
        if self.process is not None:
            self.process.stop()

    def interrupt(self) -> None:
        self._interrupted.set()
        self._slot.interrupt()

    def probe(self) -> ProbeReport:
        start = time.monotonic()
        details = {"command": " ".join(self.argv)} if self.process is not None else {}
        try:
            self.open()
            first = self.read(timeout=max(5.0, self.options.startup_timeout_s))
            return ProbeReport(opened=True, device=self.device, formats=[self._format],
                               resolutions=[(first.w, first.h)],
                               first_frame_ms=(time.monotonic() - start) * 1000, details=details)
        except SourceError as exc:
            return ProbeReport(opened=False, device=self.device, formats=[self._format], error=str(exc),
                               details=details)
        finally:
            self.close()

    @property
    def _format(self) -> str:
        return "H264" if self.h264 else "MJPG"

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        """Connect; a spawned rpicam-vid needs a moment to open the camera and listen."""
        address = (self.options.host, self.options.port)
        patience = self.options.startup_timeout_s if self.process else self.options.connect_timeout_s
        deadline = time.monotonic() + patience
        while True:
            try:
                sock = socket.create_connection(address, timeout=self.options.connect_timeout_s)
            except OSError as exc:
                if self.process is not None and not self.process.running:
                    raise SourceError(f"{self.device}: {self.process.exit_reason()}") from exc
                if time.monotonic() >= deadline or self.process is None:
                    raise SourceError(f"cannot connect to tcp://{address[0]}:{address[1]}: "
                                      f"{exc.strerror or exc}") from exc
                if self._interrupted.wait(0.1):
                    raise SourceError(f"{self.device}: open interrupted") from exc
                continue
            sock.settimeout(self.options.read_timeout_s)
            return sock

    def _frames(self) -> Iterator[Any]:
        sock = self._sock
        if sock is None:
            return
        for chunk in read_chunks(sock.recv, timeout_s=self.options.read_timeout_s,
                                 ended="connection closed by the sender"):
            yield from self._splitter.feed(chunk)

    def _shutdown_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected: nothing left to unblock
        sock.close()


def create(options: Options, camera: object) -> RpicamSource:
    """An rpicam source at the camera's resolution and fps."""
    width, height = camera.resolution  # type: ignore[attr-defined]
    return RpicamSource(options, int(width), int(height), float(camera.fps))  # type: ignore[attr-defined]
