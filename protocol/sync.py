"""Time-aligned frame sets: one frame per camera, captured together.

    with Subscriber(["tcp://10.0.0.5:5550", "tcp://10.0.0.6:5550"], cameras=[0, 1, 2]) as sub:
        frames = sub.synced([0, 1, 2], timeout=2.0)      # a FrameSet: camera -> Frame
        print(frames.spread_ns / 1e6, "ms apart")
        for frames in sub.synced_sets([0, 2]):           # every new set as it forms
            ...

Capture times are compared on *this receiver's* monotonic clock, never one host's wall clock
against another's. Each frame's own estimate is its arrival less its age on arrival
(`Frame.age_ns`, each difference taken on one clock). Frames of one node share that node's
clock, so a node is placed by its best estimate: the smallest `estimate - t_capture_ns` among
its frames held here (its clock's offset plus the quickest delivery), and each frame is put at
`t_capture_ns` + that offset when this is earlier than its own estimate. A frame that waited
somewhere — in a node's last-value cache for a late joiner, in a queue across a partition —
arrives looking fresh, and is put back where it belongs once its node's next frame is here. A
node is used from its second frame of one camera on (a cache re-sends one frame per camera).

Each camera keeps a short history (the last `depth` frames, never a queue). The newest set is
found by taking every frame as the set's latest member, newest first, and each other camera's
newest frame at most `tolerance` before it; the first complete set found is newer, member by
member, than any other set within the tolerance, and the tightest of those ending with that
frame. With the default tolerance (half the slowest camera's frame interval) two free-running
cameras always form sets; three or more may sit up to (n-1)/n of an interval apart, so pass
one interval for them. When no set forms, `SyncTimeout` says which camera had no fresh frame
or was too far apart from the others. Time is passed in as data (`now_ns`), so all of this is
testable without sleeping.

A node whose wall clock is stepped back is placed by its older frames until they leave the
history (`depth` frames); one stepped forward is placed correctly at once.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import pairwise
from types import MappingProxyType

from . import wire
from .errors import CamfabricError, FrameTimeout

MS = 1_000_000
SECOND = 1_000_000_000
DEFAULT_DEPTH = 8
# A frame older than this (or than three of the slowest camera's intervals) never joins a set:
# cameras that all stopped at once must not go on yielding their last set as if it were new.
MIN_MAX_AGE_NS = SECOND

Entry = tuple[int, wire.Frame]  # (capture time on this receiver's monotonic clock, frame)


def captured_on_receiver_ns(frame: wire.Frame) -> int:
    """When `frame` was captured, on this receiver's monotonic clock: arrival less age on arrival."""
    return frame.t_receive_ns - frame.age_ns(frame.t_receive_ns)


class SyncTimeout(FrameTimeout):
    """No set of the cameras asked for formed in time.

    `missing`: cameras without a fresh frame; `apart`: cameras whose frames were too far in
    time from the others' (the culprits, when leaving one of them out would have made a set).
    """

    def __init__(self, message: str, missing: Sequence[int] = (), apart: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.apart = tuple(apart)


class FrameHistory:
    """The last `depth` frames of one camera with their capture times on the receiver's clock."""

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth < 2:
            raise CamfabricError(f"a frame history needs a depth of at least 2, got {depth}")
        self._entries: deque[Entry] = deque(maxlen=depth)

    def add(self, frame: wire.Frame) -> None:
        self._entries.append((captured_on_receiver_ns(frame), frame))

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def interval_ns(self) -> int | None:
        """The camera's frame interval on its node's own clock: the median gap per sequence
        step (drops do not widen it), None until two frames of one node have arrived."""
        gaps = [(f1.t_capture_ns - f0.t_capture_ns) // (f1.seq - f0.seq)
                for (_, f0), (_, f1) in pairwise(self._entries)
                if f1.node == f0.node and f1.seq > f0.seq and f1.t_capture_ns > f0.t_capture_ns]
        return int(statistics.median(gaps)) if gaps else None


class FrameSet(Mapping[int, wire.Frame]):
    """One frame per camera, captured together: a read-only mapping camera -> Frame.

    `captured_ns[cam]` is each frame's capture time on this receiver's monotonic clock;
    `spread_ns` the gap between the earliest and the latest of them; `t_capture_ns` the set's
    capture moment (their midpoint, same clock); `tolerance_ns` what the set was matched within.
    """

    __slots__ = ("_frames", "captured_ns", "spread_ns", "t_capture_ns", "tolerance_ns")

    def __init__(self, entries: Mapping[int, Entry], tolerance_ns: int) -> None:
        if not entries:
            raise CamfabricError("a frame set needs at least one frame")
        self._frames = {cam: frame for cam, (_, frame) in entries.items()}
        self.captured_ns: Mapping[int, int] = MappingProxyType({cam: t for cam, (t, _) in entries.items()})
        first, last = min(self.captured_ns.values()), max(self.captured_ns.values())
        self.spread_ns = last - first
        self.t_capture_ns = first + (last - first) // 2
        self.tolerance_ns = tolerance_ns

    def __getitem__(self, cam: int) -> wire.Frame:
        return self._frames[cam]

    def __iter__(self) -> Iterator[int]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def age_ns(self, now_ns: int) -> int:
        """The age of the set's oldest frame at `now_ns` (this receiver's monotonic clock)."""
        return now_ns - min(self.captured_ns.values())

    def __repr__(self) -> str:
        seqs = ", ".join(f"{cam}: seq {f.seq}" for cam, f in self._frames.items())
        return f"FrameSet({{{seqs}}}, spread {self.spread_ns / MS:.1f} ms)"


def match(
    candidates: Mapping[int, Sequence[Entry]], tolerance_ns: int
) -> dict[int, Entry] | None:
    """The newest set, one entry per camera, whose capture times lie within `tolerance_ns`.

    Each frame, newest first, is tried as the set's latest member, with each other camera's
    newest entry no more than `tolerance_ns` before it. The first complete set is newer, camera
    by camera, than every other set within the tolerance.
    """
    if not candidates or any(not entries for entries in candidates.values()):
        return None
    anchors = sorted(((t, cam, frame) for cam, entries in candidates.items() for t, frame in entries),
                     key=lambda a: a[0], reverse=True)
    for t, anchor_cam, frame in anchors:
        chosen: dict[int, Entry] = {anchor_cam: (t, frame)}
        for cam, entries in candidates.items():
            if cam == anchor_cam:
                continue
            best = max((e for e in entries if t - tolerance_ns <= e[0] <= t),
                       key=lambda e: e[0], default=None)
            if best is None:
                break
            chosen[cam] = best
        else:
            return chosen
    return None


class FrameSync:
    """Per-camera histories fed from a receive thread, and the waiting for sets.

    `cond` is the lock and condition of the owner (a Subscriber): frames are added and sets
    looked for under it, and whoever closes the owner notifies it. `clock` is the receiver's
    monotonic clock in ns; `closed` says when the owner has closed; `nominal_fps(cam)` gives a
    camera's announced rate, used until its history has measured one.
    """

    def __init__(
        self,
        cond: threading.Condition,
        clock: Callable[[], int],
        *,
        depth: int = DEFAULT_DEPTH,
        closed: Callable[[], bool] = lambda: False,
        nominal_fps: Callable[[int], float | None] = lambda cam: None,
    ) -> None:
        self.cond = cond
        self.clock = clock
        self.depth = depth
        self.closed = closed
        self.nominal_fps = nominal_fps
        self._histories: dict[tuple[int, str], FrameHistory] = {}

    # -- fed by the receiver -----------------------------------------------------------------
    def add(self, msg: wire.Message) -> None:
        """Record a frame (any other message is ignored) and wake whoever waits for a set."""
        if not isinstance(msg, wire.Frame):
            return
        with self.cond:
            self.add_locked(msg)
            self.cond.notify_all()

    def add_locked(self, frame: wire.Frame) -> None:
        """`add` for a caller that already holds `cond`."""
        key = (frame.cam, frame.encoding)
        history = self._histories.get(key)
        if history is None:
            history = self._histories[key] = FrameHistory(self.depth)
        history.add(frame)

    def history_sizes(self) -> dict[tuple[int, str], int]:
        """How many frames each (camera, encoding) history holds now."""
        with self.cond:
            return {key: len(history) for key, history in self._histories.items()}

    # -- looking for a set (caller holds `cond`) ---------------------------------------------
    def interval_ns(self, cam: int, encoding: str) -> int | None:
        history = self._histories.get((cam, encoding))
        measured = history.interval_ns() if history is not None else None
        if measured is not None:
            return measured
        fps = self.nominal_fps(cam)
        usable = isinstance(fps, int | float) and not isinstance(fps, bool) and 0 < fps <= 1000
        return int(SECOND / fps) if usable else None

    def node_offsets(self) -> dict[str, int]:
        """Each usable node's offset: the smallest `estimate - t_capture_ns` of its frames held
        here. A node is usable once one of its cameras has two frames of different `seq`."""
        offsets: dict[str, int] = {}
        seqs: dict[tuple[int, str, str], set[int]] = {}
        usable: set[str] = set()
        for (cam, encoding), history in self._histories.items():
            for t, frame in history.entries():
                offset = t - frame.t_capture_ns
                offsets[frame.node] = min(offsets.get(frame.node, offset), offset)
                seen = seqs.setdefault((cam, encoding, frame.node), set())
                seen.add(frame.seq)
                if len(seen) > 1:
                    usable.add(frame.node)
        return {node: offset for node, offset in offsets.items() if node in usable}

    def find(
        self,
        cams: Sequence[int],
        encoding: str,
        now_ns: int,
        *,
        tolerance_ns: int | None = None,
        newer_than: FrameSet | None = None,
        max_age_ns: int | None = None,
    ) -> FrameSet | SyncTimeout:
        """The newest set of `cams` at `now_ns`, or the SyncTimeout saying why there is none."""
        intervals = {cam: self.interval_ns(cam, encoding) for cam in cams}
        unknown_rate = [cam for cam, interval in intervals.items() if interval is None]
        if tolerance_ns is None and unknown_rate:
            return SyncTimeout(
                f"{_cams(unknown_rate)} {'has' if len(unknown_rate) == 1 else 'have'} not sent two "
                "frames yet, so the default tolerance (half the slowest frame interval) is unknown",
                missing=unknown_rate)
        slowest = max((i for i in intervals.values() if i is not None), default=0)
        tolerance = tolerance_ns if tolerance_ns is not None else slowest // 2
        max_age = max_age_ns if max_age_ns is not None else max(MIN_MAX_AGE_NS, 3 * slowest)
        offsets = self.node_offsets()
        placed: dict[int, list[Entry]] = {}
        for cam in cams:
            history = self._histories.get((cam, encoding))
            placed[cam] = [(min(t, f.t_capture_ns + offsets[f.node]), f)
                           for t, f in (history.entries() if history is not None else [])
                           if f.node in offsets]
        candidates = {
            cam: [(t, f) for t, f in entries if now_ns - t <= max_age
                  and (newer_than is None or cam not in newer_than
                       or f.t_receive_ns > newer_than[cam].t_receive_ns)]
            for cam, entries in placed.items()
        }
        chosen = match(candidates, tolerance)
        if chosen is not None:
            return FrameSet(chosen, tolerance)
        return self._why_not(cams, encoding, placed, candidates, tolerance, max_age, now_ns)

    def _why_not(self, cams: Sequence[int], encoding: str, placed: Mapping[int, list[Entry]],
                 candidates: Mapping[int, list[Entry]], tolerance: int, max_age: int,
                 now_ns: int) -> SyncTimeout:
        missing = [cam for cam in cams if not candidates[cam]]
        if missing:
            reasons = []
            for cam in missing:
                history = self._histories.get((cam, encoding))
                if history is None or not len(history):
                    reasons.append(f"camera {cam}: no frame yet")
                elif not placed[cam]:
                    reasons.append(f"camera {cam}: one frame of its node so far, waiting for the "
                                   "next to tell whether it is fresh")
                elif (age := now_ns - max(t for t, _ in placed[cam])) > max_age:
                    reasons.append(f"camera {cam}: no fresh frame (its newest is "
                                   f"{age / SECOND:.2f} s old)")
                else:
                    reasons.append(f"camera {cam}: no new frame since the last set")
            return SyncTimeout("; ".join(reasons), missing=missing)
        # The culprit is a camera without which a set would form; of several (always so with
        # two cameras), the one whose newest frame lags the most — a camera that stopped.
        newest = {cam: max(t for t, _ in candidates[cam]) for cam in cams}
        latest = max(newest.values())
        culprits = [cam for cam in cams if len(cams) > 1
                    and match({c: e for c, e in candidates.items() if c != cam}, tolerance) is not None]
        apart = [max(culprits, key=lambda cam: latest - newest[cam])] if culprits else list(cams)
        lags = ", ".join(f"camera {cam} {(latest - t) / MS:.1f} ms" for cam, t in sorted(newest.items()))
        who = "from the others" if culprits else "from each other"
        return SyncTimeout(f"{_cams(apart)} too far apart {who}: no set within "
                           f"{tolerance / MS:.1f} ms (newest frames behind the latest: {lags})",
                           apart=apart)

    # -- waiting ------------------------------------------------------------------------------
    def wait(
        self,
        cams: Iterable[int],
        encoding: str,
        *,
        tolerance_ms: float | None = None,
        timeout: float = 2.0,
        newer_than: FrameSet | None = None,
        max_age_ms: float | None = None,
    ) -> FrameSet:
        """Block until a set of `cams` forms (see `find`); SyncTimeout after `timeout` s."""
        wanted = _check(cams, tolerance_ms, timeout, max_age_ms)
        tolerance_ns = None if tolerance_ms is None else int(tolerance_ms * MS)
        max_age_ns = None if max_age_ms is None else int(max_age_ms * MS)
        outcome: list[FrameSet | SyncTimeout] = []

        def formed() -> bool:
            if self.closed():
                return True
            found = self.find(wanted, encoding, self.clock(), tolerance_ns=tolerance_ns,
                              newer_than=newer_than, max_age_ns=max_age_ns)
            outcome[:] = [found]
            return isinstance(found, FrameSet)

        with self.cond:
            self.cond.wait_for(formed, timeout)
        found = outcome[0] if outcome else None
        if isinstance(found, FrameSet):
            return found
        if self.closed():
            raise SyncTimeout(f"the subscriber closed before a set of {_cams(wanted)} formed")
        assert found is not None
        raise SyncTimeout(f"no set of {_cams(wanted)} within {timeout:g} s: {found}",
                          missing=found.missing, apart=found.apart)

    def sets(self, cams: Iterable[int], encoding: str, *, tolerance_ms: float | None = None,
             timeout: float = 2.0, max_age_ms: float | None = None) -> Iterator[FrameSet]:
        """Every new set as it forms, no frame used twice; ends when the owner closes."""
        wanted = _check(cams, tolerance_ms, timeout, max_age_ms)
        previous: FrameSet | None = None
        while not self.closed():
            try:
                previous = self.wait(wanted, encoding, tolerance_ms=tolerance_ms, timeout=timeout,
                                     newer_than=previous, max_age_ms=max_age_ms)
            except SyncTimeout:
                if self.closed():
                    return
                raise
            yield previous


def _check(cams: Iterable[int], tolerance_ms: float | None, timeout: float,
           max_age_ms: float | None) -> list[int]:
    wanted = list(dict.fromkeys(int(c) for c in cams))
    if not wanted:
        raise CamfabricError("a synced set needs at least one camera")
    if tolerance_ms is not None and not tolerance_ms >= 0:
        raise CamfabricError(f"tolerance_ms must be >= 0, got {tolerance_ms!r}")
    if not timeout >= 0:
        raise CamfabricError(f"timeout must be >= 0, got {timeout!r}")
    if max_age_ms is not None and not max_age_ms > 0:
        raise CamfabricError(f"max_age_ms must be > 0, got {max_age_ms!r}")
    return wanted


def _cams(cams: Iterable[int]) -> str:
    cams = list(cams)
    return f"camera {cams[0]}" if len(cams) == 1 else "cameras " + ", ".join(map(str, cams))
