"""Passive health: outlier ejection on consecutive failures, with Envoy's defaults. Pure; `now` passed in.

Each endpoint (by `Endpoint.key`) has a `Record`. The runtime reports every attempt's outcome: a failure is a
5xx response or a connect failure (refused, reset, timed out, closed before the response head); anything else is
a success, which resets the count. Rules (Envoy outlier_detection: consecutive_5xx 5, base_ejection_time 30 s,
max_ejection_time 300 s, max_ejection_percent; ours is 50 as the issue asks, Envoy's is 10):

* `consecutive` failures in a row eject the endpoint for `base * times_ejected` seconds, at most `max_time`;
* never more than `max_percent` of the endpoints of any backend (Service port) it belongs to are ejected at
  once (rounded down; a single-endpoint backend is never ejected: panic mode would serve it anyway);
* when the ejection ends the endpoint returns **on probation**: its first result decides. A failure ejects it
  again at once (with the longer time), a success ends probation;
* the multiplier decays: each `base` seconds an endpoint spends in rotation without an ejection takes one
  off `times_ejected` (Envoy decrements it on each interval the host is healthy);
* a successful active check ends an ejection early (Envoy's successful_active_health_check_uneject_host).

The detector does not choose endpoints; it answers "which keys are ejected now", and the runtime rebuilds the
affected balancers when that set changes (`runtime.health`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive: int = 5  # 0 switches passive ejection off
    base_time: float = 30.0
    max_time: float = 300.0
    max_percent: int = 50


class Record:
    """One endpoint's passive state. `attempts` counts every attempt sent to it (for the retry budget)."""

    __slots__ = ("attempts", "consecutive", "ejected_until", "key", "probation", "quiet_since", "times_ejected")

    def __init__(self, key: str) -> None:
        self.key = key
        self.attempts = 0
        self.consecutive = 0  # failures in a row
        self.ejected_until = 0.0  # > 0 while ejected
        self.times_ejected = 0
        self.probation = False
        self.quiet_since = 0.0  # when it last returned to rotation (for the multiplier's decay)

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0


class OutlierDetector:
    def __init__(self, policy: OutlierPolicy) -> None:
        self.policy = policy
        self.records: dict[str, Record] = {}
        self._groups: dict[str, tuple[str, ...]] = {}  # backend key -> endpoint keys
        self._member_of: dict[str, list[str]] = {}  # endpoint key -> backend keys

    def record(self, key: str) -> Record:
        rec = self.records.get(key)
        if rec is None:
            rec = self.records[key] = Record(key)
        return rec

    def set_groups(self, groups: Mapping[str, Iterable[str]]) -> None:
        """The endpoint keys of each backend, after a reload. Records of keys in no group are dropped."""
        self._groups = {b: tuple(keys) for b, keys in groups.items()}
        self._member_of = {}
        for backend, keys in self._groups.items():
            for key in keys:
                self._member_of.setdefault(key, []).append(backend)
        for key in [k for k in self.records if k not in self._member_of]:
            del self.records[key]

    @property
    def ejected(self) -> frozenset[str]:
        return frozenset(k for k, r in self.records.items() if r.ejected)

    def success(self, rec: Record) -> None:
        rec.consecutive = 0
        rec.probation = False

    def failure(self, rec: Record, now: float) -> bool:
        """Count a failure; True when it ejected the endpoint (the caller then rebuilds its balancers)."""
        if rec.ejected or not self.policy.consecutive:
            return False
        rec.consecutive += 1
        if rec.consecutive < self.policy.consecutive and not rec.probation:
            return False
        if not self._may_eject(rec.key):
            return False
        rec.times_ejected += 1
        rec.ejected_until = now + min(self.policy.base_time * rec.times_ejected, self.policy.max_time)
        rec.consecutive = 0
        rec.probation = False
        return True

    def sweep(self, now: float) -> list[str]:
        """Return endpoints whose ejection is over (on probation); decay multipliers. Keys returned."""
        back = []
        for rec in self.records.values():
            if rec.ejected and now >= rec.ejected_until:
                self._return(rec, now, probation=True)
                back.append(rec.key)
            elif not rec.ejected and rec.times_ejected and now - rec.quiet_since >= self.policy.base_time:
                rec.times_ejected -= 1
                rec.quiet_since = now
        return back

    def uneject(self, key: str, now: float) -> bool:
        """An active check passed: end the ejection now (on probation). True when it was ejected."""
        rec = self.records.get(key)
        if rec is None or not rec.ejected:
            return False
        self._return(rec, now, probation=True)
        return True

    def _return(self, rec: Record, now: float, *, probation: bool) -> None:
        rec.ejected_until = 0.0
        rec.consecutive = 0
        rec.probation = probation
        rec.quiet_since = now

    def _may_eject(self, key: str) -> bool:
        return all(self._room(backend) for backend in self._member_of.get(key, ()))

    def _room(self, backend: str) -> bool:
        keys = self._groups[backend]
        ejected = sum(1 for k in keys if (r := self.records.get(k)) is not None and r.ejected)
        return ejected + 1 <= len(keys) * self.policy.max_percent // 100

    def ejected_among(self, keys: Collection[str]) -> int:
        return sum(1 for k in keys if (r := self.records.get(k)) is not None and r.ejected)
