"""Leader election over a coordination.k8s.io/v1 Lease: the decisions, without I/O or a clock of our own.

The protocol is client-go's `leaderelection`: the Lease's `spec.holderIdentity` names the leader, which
rewrites `spec.renewTime` every retry period. A candidate may take the Lease over only when it has seen the
same record unchanged for `leaseDurationSeconds` **by its own monotonic clock** (`LeaseObserver`): comparing
`renewTime` with our wall clock would make the election depend on clock skew between nodes. Writes carry the
resourceVersion that was read, so two candidates racing for an expired Lease cannot both win: the second PUT
gets 409 Conflict and stays a follower.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str
    duration: int
    acquire_time: str
    renew_time: str
    transitions: int


def read_record(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(str(spec.get("holderIdentity") or ""), int(spec.get("leaseDurationSeconds") or 0),
                       str(spec.get("acquireTime") or ""), str(spec.get("renewTime") or ""),
                       int(spec.get("leaseTransitions") or 0))


def micro_time(now: datetime.datetime) -> str:
    """A MicroTime as the API wants it: RFC 3339 with microseconds, UTC."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed(lease: dict[str, Any] | None, *, name: str, namespace: str, identity: str, duration: int,
            now: datetime.datetime) -> dict[str, Any]:
    """The Lease object to write to hold (or keep holding) it: a new one when `lease` is None."""
    body: dict[str, Any] = copy.deepcopy(lease) if lease is not None else {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace}, "spec": {}}
    old = read_record(body) if lease is not None else None
    stamp = micro_time(now)
    spec: dict[str, Any] = body.setdefault("spec", {})
    spec.update(holderIdentity=identity, leaseDurationSeconds=duration, renewTime=stamp)
    if old is None or old.holder != identity:
        spec["acquireTime"] = stamp
        spec["leaseTransitions"] = (old.transitions + 1) if old is not None else 0  # as client-go counts
    return body


def released(lease: dict[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """Give the Lease up on a clean shutdown, so a follower need not wait out the whole duration."""
    body = copy.deepcopy(lease)
    body["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(now))
    return body


@dataclass(slots=True)
class LeaseObserver:
    """When did we last see the Lease record change? Expiry is judged from that, on our monotonic clock."""

    record: LeaseRecord | None = None
    seen_at: float = 0.0

    def observe(self, record: LeaseRecord, now: float) -> None:
        if record != self.record:
            self.record, self.seen_at = record, now

    def held_by_other(self, identity: str, now: float) -> bool:
        r = self.record
        return r is not None and r.holder not in ("", identity) and now < self.seen_at + r.duration
