"""Mailbox: hands items from any thread to the one thread that owns a ZeroMQ socket.

ZeroMQ sockets belong to one thread. Instead of a socket per sending thread (which nobody
closes when the thread ends, and whose inproc name must be unique), senders append to a
bounded deque under a lock and wake the owner through a pipe, whose read end the owner
registers in its `zmq.Poller` next to its sockets. A full mailbox refuses the item (the caller
counts it); nothing ever queues without bound.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """A bounded, thread-safe queue whose `fileno()` a zmq.Poller can wait on."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._read_fd = self._write_fd = -1  # the pipe is made on first use, closed by close()
        self._signalled = False
        self._closed = False

    def _pipe(self) -> None:
        """Make the wake-up pipe (lock held)."""
        if self._read_fd < 0:
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        """The descriptor that is readable while items wait (for `zmq.Poller.register`)."""
        with self._lock:
            if self._closed:
                raise ValueError("mailbox is closed")
            self._pipe()
            return self._read_fd

    def put(self, item: T) -> bool:
        """Append `item`; False when the mailbox is full or closed (nothing was queued)."""
        with self._lock:
            if self._closed or len(self._items) >= self.capacity:
                return False
            self._pipe()
            self._items.append(item)
            self._signal()
        return True

    def wake(self) -> None:
        """Make `fileno()` readable without an item, so the owner looks up from its poll now
        (e.g. to see that it was asked to stop)."""
        with self._lock:
            if self._closed:
                return
            self._pipe()
            self._signal()

    def _signal(self) -> None:
        """Write the wake-up byte unless one is waiting (lock held)."""
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self._write_fd, b"x")
            except BlockingIOError:
                pass  # the pipe already holds a wake-up byte

    def take(self, limit: int) -> list[T]:
        """Up to `limit` items, oldest first; clears the wake-up when the mailbox is empty."""
        with self._lock:
            items = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            if not self._items and self._signalled and not self._closed:
                self._signalled = False
                try:
                    os.read(self._read_fd, 64)
                except BlockingIOError:
                    pass
        return items

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """Refuse further items and release the pipe (the owner thread calls this at its end)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            if self._read_fd >= 0:
                os.close(self._read_fd)
                os.close(self._write_fd)
