"""Retry budget: retries to one service stay under a share of its traffic over a sliding window. Pure.

Linkerd's and Envoy's idea (Finagle's RetryBudget): under a partial failure retries help, under a total failure
they multiply the load by the number of tries exactly when the service can least take it. So retries are
allowed while, over the last `window` seconds, `retries < max(min_retries, percent/100 * first attempts)`.
`min_retries` (10 per window by default, Linkerd's minimum of 1 a second) lets a quiet service still retry
its failures: at a few requests a second, retrying is no hammering, and a budget of 20 % of nothing would
leave a half-broken service with no retries at all.

Counting costs the hot path nothing extra: attempts are counted per endpoint anyway (`outlier.Record.attempts`);
the runtime samples a service's total once a tick (`sample`), and the budget compares against the sample
taken about one window ago. Retries are rare and recorded with their time.
"""

from __future__ import annotations

from collections import deque


class RetryBudget:
    __slots__ = ("_retries", "_samples", "min_retries", "percent", "window")

    def __init__(self, percent: float = 20.0, window: float = 10.0, min_retries: int = 10) -> None:
        self.percent = percent
        self.window = window
        self.min_retries = min_retries
        self._samples: deque[tuple[float, int]] = deque()  # (time, total attempts), oldest first
        self._retries: deque[float] = deque()

    def sample(self, now: float, attempts: int) -> None:
        self._samples.append((now, attempts))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def allow(self, now: float, attempts: int) -> bool:
        """May one more retry go out now, with `attempts` the service's total attempts so far? Records it."""
        if self.percent <= 0:
            return True
        while self._retries and self._retries[0] <= now - self.window:
            self._retries.popleft()
        base = self._samples[0][1] if self._samples else 0
        firsts = max(0, attempts - base - len(self._retries))
        if len(self._retries) >= max(self.min_retries, self.percent / 100 * firsts):
            return False
        self._retries.append(now)
        return True

    @property
    def retries(self) -> int:
        return len(self._retries)
