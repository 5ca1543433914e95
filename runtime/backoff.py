"""One backoff for every retry in camfabric: capped exponential, with jitter, honouring a
server's "retry after".

    backoff = Backoff(base_s=0.5, cap_s=30.0)
    delay = backoff.delay(failures)                 # after 1, 2, 3 … failures in a row
    delay = backoff.delay(failures, retry_after=17) # never sooner than the server asked

The camera loop, rpicam-vid supervision, the Prusa Connect uploader and the Gemini budget all
use it, so a change to how camfabric retries is made here once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds to wait before the next attempt after `failures` consecutive failures.

    The ceiling doubles from `base_s` up to `cap_s`; `jitter` is the fraction of the ceiling that
    is random (0 gives exactly the ceiling; 0.5, the default, a delay between half and all of it),
    which spreads the retries of many cameras that failed together. A server's `retry_after` is
    a floor, not a hint.
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.base_s <= self.cap_s:
            raise ValueError(f"backoff needs 0 <= base_s <= cap_s, got {self.base_s}, {self.cap_s}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter must be within 0..1, got {self.jitter}")

    def ceiling(self, failures: int) -> float:
        """The largest delay after `failures` failures (1 → base_s), capped at cap_s."""
        return min(self.cap_s, self.base_s * 2.0 ** min(max(failures - 1, 0), 60))

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """The delay to wait after `failures` consecutive failures (>= 1)."""
        ceiling = self.ceiling(failures)
        delay = ceiling * (1.0 - self.jitter * self.rng.random())
        if retry_after is not None and retry_after > delay:
            delay = float(retry_after)
        return delay


__all__ = ["Backoff"]
