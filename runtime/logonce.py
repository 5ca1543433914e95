"""One "log once per distinct failure" for every background loop in camfabric.

A loop that fails on every frame must not write a line per frame, yet a user must see each new
kind of failure, and see it again when it comes back after a recovery:

    failures = LogOnce(log)
    failures.warning("decode", "camera %s: cannot decode: %s", cam, exc)   # logged
    failures.warning("decode", "camera %s: cannot decode: %s", cam, exc)   # silent
    failures.recovered()                     # the next failure of any kind is logged again
    failures.recovered("decode")             # … or only this kind

Failures are keyed by their *kind* — a short fixed string chosen by the caller — never by a
value that varies (a byte count, a peer address), so 20 000 bad messages give one line; the set
of kinds is bounded (`max_kinds`, oldest forgotten first).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any


class LogOnce:
    """Logs each kind of failure once until it is `recovered()`; counts the repeats."""

    def __init__(self, log: logging.Logger, *, max_kinds: int = 64) -> None:
        self.log = log
        self.max_kinds = max_kinds
        self._seen: OrderedDict[str, int] = OrderedDict()

    def log_failure(self, kind: str, level: int, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log `msg % args` at `level` unless `kind` was logged since its last recovery.

        Returns True when the line was written. Repeats are counted (`repeats(kind)`)."""
        if kind in self._seen:
            self._seen[kind] += 1
            self._seen.move_to_end(kind)
            return False
        self._seen[kind] = 0
        while len(self._seen) > self.max_kinds:
            self._seen.popitem(last=False)
        self.log.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, kind: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log_failure(kind, logging.WARNING, msg, *args, exc_info=exc_info)

    def error(self, kind: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log_failure(kind, logging.ERROR, msg, *args, exc_info=exc_info)

    def info(self, kind: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log_failure(kind, logging.INFO, msg, *args, exc_info=exc_info)

    def recovered(self, kind: str | None = None) -> bool:
        """Forget `kind` (or every kind): its next failure is logged again. True if any was
        outstanding, so a caller can log the recovery itself once."""
        if kind is None:
            had = bool(self._seen)
            self._seen.clear()
            return had
        return self._seen.pop(kind, None) is not None

    def repeats(self, kind: str) -> int:
        """How many times `kind` failed silently since it was logged."""
        return self._seen.get(kind, 0)

    def __contains__(self, kind: str) -> bool:
        return kind in self._seen


__all__ = ["LogOnce"]
