"""The timelapse process's moving parts: Moonraker in, frames from the fabric, videos out.

`TimelapseService(config).start()` keeps a websocket to Moonraker (`moonraker.MoonrakerLink`),
turns its print state into triggers (`triggers.PrintTriggers`), captures the right frame per
trigger (`recorder.FrameRecorder`), keeps the frames of each print on disk (`frames`), renders
the video when the print ends on a thread of its own (`render`), and publishes its state as
`status/timelapse/` on `publish` every `status_interval_s` and at each change, which the gateway
shows under /status for the configured camera.

Every failure is a line in that state and in the log, never the end of the process: Moonraker
gone (reconnect with backoff; the print carries on when it comes back), a camera gone (frames
skipped and counted), a full disk (the frame or the video fails, the error is shown, the frames
captured so far stay).
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ...protocol import wire
from ...protocol.publisher import Publisher
from ...protocol.subscriber import Subscriber, captured_locally_ns
from ...runtime.backoff import Backoff
from ...runtime.clock import SYSTEM_CLOCK, Clock
from ...runtime.errors import CamfabricError
from ...runtime.logonce import LogOnce
from ...runtime.version import __version__
from .config import TimelapseConfig
from .frames import FRAMES_DIR, FrameFolder, clean_old, unfinished
from .moonraker import MoonrakerLink
from .recorder import FrameRecorder
from .render import RenderError, render
from .triggers import PrintEnded, PrintStarted, PrintTriggers, Trigger, print_stem

SERVICE = "timelapse"
RENDERS_SHOWN = 5
TICK_S = 0.05

log = logging.getLogger(__name__)


@dataclass
class Recording:
    """One print being recorded (or rendered): what was taken and what was skipped."""

    print_id: str
    filename: str
    folder: FrameFolder
    taken: int = 0
    skipped: Counter = field(default_factory=Counter)
    state: str = "recording"


class TimelapseService:
    """Runs the Moonraker link, the recorder, the renderer and the status publisher."""

    def __init__(self, config: TimelapseConfig, *, context: zmq.Context | None = None,
                 clock: Clock = SYSTEM_CLOCK, api_key: str | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.clock = clock
        self.api_key = config.api_key() if api_key is None else api_key
        self.frames_root = Path(config.output_dir) / FRAMES_DIR
        self.triggers = PrintTriggers(config.mode, config.interval_s, wall=clock.wall,
                                      resume=lambda filename, since: unfinished(
                                          self.frames_root, print_stem(filename), since))
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.recorder: FrameRecorder | None = None
        self.link: MoonrakerLink | None = None
        self.recordings: dict[str, Recording] = {}  # being recorded or waiting for its render
        self.recording: Recording | None = None  # the newest print
        self.renders: deque[dict[str, Any]] = deque(maxlen=RENDERS_SHOWN)
        self.last_error: str | None = None
        self.totals = Counter()
        self._lock = threading.RLock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._render_jobs: queue.Queue[tuple[Recording, str] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._failures = LogOnce(log)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> TimelapseService:
        try:
            self.frames_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CamfabricError(f"cannot create the timelapse folder {self.frames_root}: {exc} "
                                 "(see timelapse.output_dir)") from exc
        clean_old(self.frames_root, self.config.frames_max_age_days)
        for stale in Path(self.config.output_dir).glob(".*.partial*"):
            stale.unlink(missing_ok=True)  # a video cut short by a crash or a power cut
        try:
            self.publisher = Publisher(self.config.publish, context=self.context, sndhwm=16).start()
        except zmq.ZMQError as exc:
            raise CamfabricError(f"cannot publish the timelapse status on {self.config.publish}: {exc} "
                                 "(is another timelapse running? see timelapse.publish)") from exc
        try:
            self.subscriber = Subscriber(list(self.config.nodes), cameras=[self.config.camera],
                                         encoding="jpeg", on_demand=True, idle_s=1.0,
                                         context=self.context).start()
        except BaseException:
            self.publisher.stop()
            raise
        self.recorder = FrameRecorder(
            self.subscriber, cam=self.config.camera, settle_s=self.config.settle_s,
            frame_timeout_s=self.config.frame_timeout_s, on_frame=self._on_frame,
            on_skip=self._on_skip, on_end=self._on_end, clock=self.clock).start()
        self.link = MoonrakerLink(self.config.websocket_url, self, api_key=self.api_key,
                                  backoff=Backoff(base_s=min(0.2, self.config.reconnect_max_s),
                                                  cap_s=self.config.reconnect_max_s),
                                  clock=self.clock).start()
        for target, name in ((self._tick, "timelapse-tick"), (self._render_loop, "timelapse-render"),
                             (self._publish_status, "timelapse-status")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("timelapse of camera %s (%s mode) from Moonraker %s into %s; status on %s",
                 self.config.camera, self.config.mode, self.config.moonraker, self.config.output_dir,
                 self.publisher.endpoint)
        return self

    def stop(self) -> None:
        """Stop every thread and close the sockets (linger 0); a recording in hand stays on disk."""
        self._stopping.set()
        self._changed.set()
        self._render_jobs.put(None)
        if self.link is not None:
            self.link.stop(1.0)
        if self.recorder is not None:
            self.recorder.stop(1.0)
        for thread in self._threads:
            thread.join(0.5)
        if self.publisher is not None:
            self._publish_once()
            self.publisher.stop()
        if self.subscriber is not None:
            self.subscriber.close()

    def __enter__(self) -> TimelapseService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def status_endpoint(self) -> str:
        return self.publisher.endpoint if self.publisher is not None else self.config.publish

    # -- Moonraker's events (on the link's thread) ---------------------------------------------
    def on_connected(self) -> None:
        log.info("connected to Moonraker at %s", self.config.moonraker)
        self._changed.set()

    def on_status(self, print_stats: dict[str, Any], now: float, full: bool) -> None:
        with self._lock:
            events = self.triggers.status(print_stats, now, full=full)
        self._handle(events)

    def on_gcode_response(self, line: str, now: float) -> None:
        with self._lock:
            events = self.triggers.gcode_response(line, now)
        self._handle(events)

    def on_klippy_lost(self, now: float) -> None:
        log.warning("Klipper disconnected from Moonraker; a print in progress ends with what was recorded")
        with self._lock:
            events = self.triggers.lost()
        self._handle(events)

    def on_disconnected(self, reason: str) -> None:
        log.warning("lost Moonraker (%s); recording resumes when it is back", reason)
        self._changed.set()

    # -- prints --------------------------------------------------------------------------------
    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, PrintStarted):
                self._start_recording(event)
            elif isinstance(event, Trigger):
                with self._lock:
                    self.totals["triggers"] += 1
                if self.recorder is not None:
                    self.recorder.trigger(event)
            elif isinstance(event, PrintEnded):
                log.info("print %s ended (%s); rendering once its last frame is in",
                         event.print_id, event.state)
                if self.recorder is not None:
                    self.recorder.end(event.print_id, event.state)
        if events:
            self._changed.set()

    def _start_recording(self, event: PrintStarted) -> None:
        try:
            folder = FrameFolder.create(self.frames_root, event.print_id)
        except OSError as exc:
            self._error("folder", f"cannot create the frame folder for {event.print_id}: {_os_error(exc)}")
            folder = FrameFolder(self.frames_root / event.print_id)
        with self._lock:
            self.recording = Recording(event.print_id, event.filename, folder, taken=folder.count)
            self.recordings[event.print_id] = self.recording
        if event.resumed:
            log.info("print %r in progress: carrying on with %s (%d frames so far)", event.filename,
                     event.print_id, folder.count)
        else:
            log.info("print %r started: recording %s", event.filename, event.print_id)

    def _on_frame(self, trigger: Trigger, frame: wire.Frame) -> None:
        recording = self._recording_of(trigger.print_id)
        if recording is None:
            return
        facts = {"seq": frame.seq, "t_capture_ns": frame.t_capture_ns, "node": frame.node,
                 "trigger_mono_ns": int(trigger.t * 1e9), "settle_s": self.config.settle_s,
                 "captured_mono_ns": captured_locally_ns(frame), "reason": trigger.reason,
                 "layer": trigger.layer}
        try:
            recording.folder.add(bytes(frame.data), facts)
        except OSError as exc:
            # The error first: whoever sees the skip counted (in /status) sees its cause too.
            self._error("store", f"cannot store a frame in {recording.folder.path}: {_os_error(exc)} "
                                 "(logged once until a frame is stored again; each one counted)")
            self._on_skip(trigger, "disk", _os_error(exc))
            return
        if self._failures.recovered("store"):
            log.info("timelapse: frames are stored again in %s", recording.folder.path)
        with self._lock:
            recording.taken += 1
            self.totals["taken"] += 1
        self._changed.set()

    def _on_skip(self, trigger: Trigger, reason: str, detail: str) -> None:
        recording = self._recording_of(trigger.print_id)
        with self._lock:
            self.totals[f"skipped_{reason}"] += 1
            if recording is not None:
                recording.skipped[reason] += 1
        log.debug("frame for %s (%s) skipped: %s: %s", trigger.print_id, trigger.reason, reason, detail)
        self._changed.set()

    def _on_end(self, print_id: str, state: str) -> None:
        """On the recorder's thread, after the print's last trigger: hand it to the renderer."""
        recording = self._recording_of(print_id)
        if recording is None:
            return
        with self._lock:
            recording.state = "rendering"
        self._render_jobs.put((recording, state))
        self._changed.set()

    def _recording_of(self, print_id: str) -> Recording | None:
        with self._lock:
            return self.recordings.get(print_id)

    # -- rendering -----------------------------------------------------------------------------
    def _render_loop(self) -> None:
        while True:
            job = self._render_jobs.get()
            if job is None:
                return
            recording, state = job
            try:
                self._render(recording, state)
            except Exception as exc:  # the next print must still be recorded
                log.exception("rendering %s failed", recording.print_id)
                self._error("render", f"rendering {recording.print_id} failed: {exc}")
            with self._lock:
                self.recordings.pop(recording.print_id, None)
                if self.recording is recording:
                    self.recording = None
            self._changed.set()

    def _render(self, recording: Recording, state: str) -> None:
        config = self.config
        frames = recording.folder.frames()
        entry: dict[str, Any] = {"print": recording.filename, "print_id": recording.print_id,
                                 "end_state": state, "frames_taken": recording.taken,
                                 "frames_skipped": sum(recording.skipped.values()),
                                 "finished": self.clock.wall()}
        if not frames:
            entry.update(ok=False, error="no frames were captured")
            log.warning("print %s: no frames captured, no video", recording.print_id)
            recording.folder.remove()
        else:
            path = Path(config.output_dir) / f"timelapse_{recording.print_id}.mp4"
            fps = config.fps_for(len(frames))
            try:
                video = render(frames, path, fps=fps, duplicate_last_s=config.duplicate_last_s,
                               codec=config.codec, preview_quality=config.jpeg_quality)
            except RenderError as exc:
                entry.update(ok=False, error=str(exc), frames_dir=str(recording.folder.path))
                self._error("render", f"{exc}; the frames are kept in {recording.folder.path}")
            else:
                entry.update(ok=True, video=video.path.name, preview=video.preview.name,
                             video_frames=video.frames, fps=round(video.fps, 3), encoder=video.encoder,
                             seconds=round(video.frames / video.fps, 2))
                recording.folder.keep_manifest_only()
        with self._lock:
            self.renders.appendleft(entry)
            self.totals["renders"] += 1
        with self._lock:
            keep = set(self.recordings)
        clean_old(self.frames_root, config.frames_max_age_days, keep=keep)

    # -- hyperlapse ----------------------------------------------------------------------------
    def _tick(self) -> None:
        while not self._stopping.wait(TICK_S):
            with self._lock:
                events = self.triggers.tick(self.clock.monotonic())
            if events:
                self._handle(events)

    # -- status --------------------------------------------------------------------------------
    def _error(self, kind: str, message: str) -> None:
        """Show `message` as the last error in the status; log it once per kind of failure."""
        self._failures.error(kind, "timelapse: %s", message)
        if kind == "render":
            self._failures.recovered("render")  # each print's render failure is its own line
        with self._lock:
            self.last_error = message
        self._changed.set()

    def status(self) -> dict[str, Any]:
        """The state published on status/timelapse/: under `cameras`, keyed by the camera id,
        which the gateway shows in that camera's /status health."""
        with self._lock:
            recording = self.recording
            state = recording.state if recording is not None else "idle"
            if state == "recording" and self.triggers.state == "paused":
                state = "paused"
            camera = {
                "state": state,
                "mode": self.config.mode,
                "print": recording.filename if recording else None,
                "frames_taken": recording.taken if recording else 0,
                "frames_skipped": sum(recording.skipped.values()) if recording else 0,
                "skipped": dict(recording.skipped) if recording else {},
                "last_error": self.last_error,
                "moonraker": self._moonraker_state(),
                "last_render": self.renders[0] if self.renders else None,
                "renders": list(self.renders),  # newest first; the dashboard lists them
            }
            return {
                "cameras": {str(self.config.camera): camera},
                "renders": list(self.renders),
                "totals": dict(self.totals),
                "output_dir": str(self.config.output_dir),
                "running": not self._stopping.is_set(),
                "version": __version__,
            }

    def _moonraker_state(self) -> str:
        link = self.link
        if link is None or not link.connected:
            return "disconnected"
        return "connected" if link.klippy_state == "ready" else f"klippy {link.klippy_state}"

    def _publish_once(self) -> None:
        if self.publisher is not None:
            self.publisher.publish(wire.Status(service=SERVICE, state=self.status()))

    def _publish_status(self) -> None:
        while not self._stopping.is_set():
            self._changed.clear()
            try:
                self._publish_once()
            except Exception:  # the status must never take the recording down with it
                log.exception("publishing the timelapse status failed")
            self._changed.wait(self.config.status_interval_s)
            self._stopping.wait(0.05)  # a burst of changes is one message


def _os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full ({exc.strerror})"
    return str(exc)


__all__ = ["SERVICE", "Recording", "TimelapseService"]
