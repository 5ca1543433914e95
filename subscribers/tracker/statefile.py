"""State that outlives a process and is shared by the processes of one host: a small JSON
file, read and written under an exclusive lock on a `.lock` file beside it, replaced
atomically (written to a temporary file, then renamed), so a reader never sees half a state and
two writers never lose each other's update.

    store = StateFile(path, fresh=lambda boot: {...}, after_reboot=carry_over).open()
    with store.transaction() as state:      # exclusive across threads and processes
        state["count"] += 1                 # written back only when changed

Monotonic times in the state mean something only during the boot that wrote them; the state
records the boot (`/proc/sys/kernel/random/boot_id`), and a state from another boot goes
through `after_reboot` before use. With `path=None` the state lives in memory (one process).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...runtime.errors import CamfabricError

LOCK_TIMEOUT_S = 5.0
State = dict[str, Any]


class StateFileError(CamfabricError):
    """The shared state cannot be used (unwritable, locked too long, conflicting)."""


def boot_id() -> str:
    """This boot of the host (the monotonic clock's epoch); '' where the kernel does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StateFile:
    """One JSON state, in memory or in a locked file; `transaction()` is its only access."""

    def __init__(self, path: Path | None, *, fresh: Callable[[str], State],
                 after_reboot: Callable[[State, State], State], what: str = "state",
                 log: logging.Logger | None = None) -> None:
        self.path = path
        self.fresh = fresh
        self.after_reboot = after_reboot  # (old state, fresh state) -> the state to use
        self.what = what  # names the config key in errors, e.g. "tracker.gemini.state_dir"
        self.log = log or logging.getLogger(__name__)
        self.boot = boot_id()
        self._lock = threading.Lock()
        self._memory = fresh(self.boot)
        self._fd: int | None = None

    def open(self) -> StateFile:
        if self.path is None or self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateFileError(f"cannot use the directory {self.path.parent} ({self.what}): "
                                 f"{exc.strerror}") from exc
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[State]:
        """The state, exclusively (threads and processes); written back when changed."""
        with self._lock:
            if self._fd is None:
                yield self._memory
                return
            self._flock()
            try:
                state, before = self._read()
                yield state
                if json.dumps(state) != before:
                    self._write(state)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _flock(self) -> None:
        # Real time, not an injected clock: this waits on another process.
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StateFileError(f"the lock {self.path.with_suffix('.lock')} has been held "
                                         f"for over {LOCK_TIMEOUT_S:g} s by another process") from None
                time.sleep(0.005)

    def _read(self) -> tuple[State, str]:
        """The state, and the file's content as read ('' when it had none usable)."""
        fresh = self.fresh(self.boot)
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return fresh, ""
        except (OSError, ValueError) as exc:
            self.log.warning("%s %s unreadable (%s); starting it afresh", self.what, self.path,
                             type(exc).__name__)
            return fresh, ""
        if not isinstance(state, dict) or set(state) != set(fresh):
            return fresh, ""
        if state.get("boot") != self.boot:
            return self.after_reboot(state, fresh), ""
        return state, json.dumps(state)

    def _write(self, state: State) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StateFileError(f"cannot write {self.path} ({self.what}): {exc.strerror}") from exc


__all__ = ["StateFile", "StateFileError", "boot_id", "pid_alive"]
