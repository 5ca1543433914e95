"""One way to start a background thread: with a handshake, so the caller learns at once
whether it came up (and what stopped it if not), instead of finding a dead thread later.

    def _run(ready: Ready) -> None:
        sock = context.socket(zmq.SUB)      # set up in the thread that owns the socket
        sock.bind(endpoint)
        ready.set()                         # or ready.fail(exc) — start_thread re-raises it
        ...

    thread = start_thread(_run, name="camfabric-publisher", timeout=5.0)

A part that owns such threads derives from `Background`: `with part:` starts it and stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import CamfabricError

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations here are never evaluated at run time


class Ready:
    """The handshake between `start_thread` and the thread it starts."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: BaseException | None = None

    def set(self) -> None:
        """The thread is up."""
        self._event.set()

    def fail(self, exc: BaseException) -> None:
        """The thread could not come up; `start_thread` raises `exc` in the caller."""
        self.error = exc
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


def start_thread(target: Callable[[Ready], None], *, name: str, timeout: float = 5.0,
                 daemon: bool = True) -> threading.Thread:
    """Start `target(ready)` in a thread named `name` and wait until it calls `ready.set()`.

    Raises what the thread passed to `ready.fail()`, the exception it died of before the
    handshake, or CamfabricError when it did neither within `timeout` seconds.
    """
    ready = Ready()

    def _body() -> None:
        try:
            target(ready)
        except BaseException as exc:
            if not ready.wait(0):
                ready.fail(exc)
                return
            raise

    thread = threading.Thread(target=_body, name=name, daemon=daemon)
    thread.start()
    if not ready.wait(timeout):
        raise CamfabricError(f"thread {name} did not start within {timeout:g} s")
    if ready.error is not None:
        thread.join(1.0)
        raise ready.error
    return thread


class Background:
    """A part with threads of its own: `start()` brings it up and returns it, `stop()` ends
    them and joins them; `with part:` does both."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Background", "Ready", "start_thread"]
