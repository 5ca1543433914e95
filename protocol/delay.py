"""LinkDelay: how long a message spent in flight beyond its link's usual, on one host's clocks.

A receiver cannot subtract the publisher's wall clock from its own: the two hosts' clocks
differ by an unknown offset. But for one link the difference `receive time - t_publish_ns`
is that offset plus the time in flight, and its smallest value seen recently is the offset
plus the link's quickest transit — the *baseline*. Whatever a message shows beyond the
baseline is delay: time it sat in the publisher's queue, in TCP buffers across a partition,
or behind a slow link. Adding that excess to a frame's age makes frames delivered late look
as old as they are, still without comparing two clocks.

The receive time is taken on the receiver's monotonic clock, so a step of the receiver's wall
clock changes nothing. The window is the newest `buckets` buckets of `bucket_s` seconds *that
saw traffic*: a link silent for a minute (a partition) keeps its baseline, so the backlog that
arrives when it heals is measured against the offset from before. A step of the publisher's
wall clock is absorbed once the window has rolled past it (backwards: its frames count as
delayed until then; forwards: at once).
"""

from __future__ import annotations

import collections
import threading

DEFAULT_BUCKET_S = 2.0
DEFAULT_BUCKETS = 10
MAX_LINKS = 1024


class LinkDelay:
    """Per-link baseline of `receive - t_publish_ns`, and each message's excess over it."""

    def __init__(self, *, bucket_s: float = DEFAULT_BUCKET_S, buckets: int = DEFAULT_BUCKETS,
                 max_links: int = MAX_LINKS) -> None:
        self.bucket_ns = int(bucket_s * 1e9)
        self.buckets = buckets
        self.max_links = max_links
        # link -> deque of [bucket index, smallest offset seen in it]
        self._links: collections.OrderedDict[str, collections.deque[list[int]]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def observe(self, link: str, t_receive_ns: int, t_publish_ns: int) -> int:
        """Record one message of `link` received at `t_receive_ns` (this host's monotonic
        clock) and published at `t_publish_ns` (the sender's wall clock); returns its delay in
        nanoseconds beyond the link's baseline (0 for a message as quick as the quickest)."""
        offset = t_receive_ns - t_publish_ns
        index = t_receive_ns // self.bucket_ns
        with self._lock:
            window = self._links.get(link)
            if window is None:
                if len(self._links) >= self.max_links:
                    self._links.popitem(last=False)  # the link heard from least recently
                window = self._links[link] = collections.deque(maxlen=self.buckets)
            else:
                self._links.move_to_end(link)
            if window and window[-1][0] == index:
                window[-1][1] = min(window[-1][1], offset)
            else:
                window.append([index, offset])
            baseline = min(entry[1] for entry in window)
        return max(0, offset - baseline)

    def baseline_ns(self, link: str) -> int | None:
        """The link's current baseline offset, or None before its first message."""
        with self._lock:
            window = self._links.get(link)
            return min(entry[1] for entry in window) if window else None
