"""Retry delays: jittered exponential backoff that honours Retry-After. Pure (the rng is injected).

The delay before retry n (counting from 0) is `base * factor**n` capped at `cap`, with "equal jitter": half
of it fixed, the other half uniformly random, so a fleet of replicas that failed together does not retry in
lockstep (the thundering herd that a 429 is asking us to avoid) yet no retry comes sooner than half the
schedule. A server's `Retry-After` (429 Too Many Requests, 503, and the API server's own 5xx with
priority-and-fairness) is a floor: we wait at least that long, bounded by `max_retry_after` so a bogus value
cannot park a reflector for hours. `reset()` after a success starts the schedule over.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime


@dataclass(slots=True)
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    max_retry_after: float = 120.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP-date, RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)
