"""Demand: which topics someone wants now, and which have gone idle.

A subscriber on demand subscribes a camera's frames while they are wanted and drops the
subscription once nobody asked for `idle_ns`. `Demand` keeps that bookkeeping apart from the
sockets, with time passed in as data (a monotonic clock's nanoseconds), so it reads and tests
without sleeping: `want` notes a request, `hold`/`unhold` bracket a block that needs the topic
throughout (an MJPEG response), `release` gives it up at once, and `idle` hands back the topics
to unsubscribe now. Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Demand(Generic[K]):
    """When each key was last wanted, and how many blocks hold it."""

    def __init__(self, idle_ns: int) -> None:
        self.idle_ns = idle_ns
        self._wanted: dict[K, int] = {}
        self._holds: dict[K, int] = {}
        self._lock = threading.Lock()

    def want(self, key: K, now: int) -> bool:
        """Note that `key` is wanted at `now`; True when it was not wanted before (subscribe it)."""
        with self._lock:
            fresh = key not in self._wanted
            self._wanted[key] = now
            return fresh

    def release(self, key: K, now: int) -> bool:
        """Give `key` up at once unless a block holds it; True when it is now idle."""
        with self._lock:
            if self._holds.get(key) or key not in self._wanted:
                return False
            self._wanted[key] = now - self.idle_ns - 1
            return True

    def hold(self, key: K, now: int) -> bool:
        """A block needs `key` until `unhold`; True when it was not wanted before."""
        with self._lock:
            self._holds[key] = self._holds.get(key, 0) + 1
            fresh = key not in self._wanted
            self._wanted[key] = now
            return fresh

    def unhold(self, key: K, now: int) -> None:
        """The block ends: `key` stays wanted for `idle_ns` more unless someone wants it again."""
        with self._lock:
            left = self._holds.get(key, 0) - 1
            if left > 0:
                self._holds[key] = left
            else:
                self._holds.pop(key, None)
            if key in self._wanted:
                self._wanted[key] = now

    def idle(self, now: int) -> list[K]:
        """The keys nobody wanted for `idle_ns` and no block holds; they are forgotten."""
        with self._lock:
            gone = [key for key, at in self._wanted.items()
                    if now - at > self.idle_ns and not self._holds.get(key)]
            for key in gone:
                del self._wanted[key]
            return gone
