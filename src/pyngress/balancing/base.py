"""The Balancer seam: `pick` one endpoint for a request, `update` when the endpoint set changes.

A Balancer belongs to one Backend (a Service port) in one worker and lives across snapshots: the runtime calls
`update` with the new endpoints on every reload, and the balancer keeps whatever live state still applies
(cursor, counters) by endpoint key. Implementations are pure: randomness and time are injected, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyngress.model import Endpoint


@dataclass(slots=True)
class PickContext:
    """What a balancer may use to choose. Every field is optional: algorithms ignore what they do not need.

    `exclude` holds the keys of endpoints already tried for this request (a retry must go elsewhere).
    `hash_key` is the consistent-hashing key of the request (upstream-hash-by), when the route has one.
    `now` is the caller's clock (seconds, monotonic), for algorithms that age what they measure.
    `affinity` is the request's session cookie value, for cookie affinity.
    """

    client_address: str = ""
    exclude: Collection[str] = ()
    hash_key: bytes | None = None
    now: float = 0.0
    affinity: bytes | None = None


NO_CONTEXT = PickContext()


class Balancer(Protocol):
    def pick(self, ctx: PickContext) -> Endpoint | None: ...

    def update(self, endpoints: Sequence[Endpoint]) -> None: ...
