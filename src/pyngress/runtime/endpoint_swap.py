"""Installing an endpoint-only change without rebuilding the data plane (issue 6: the EndpointSlice fast path).

Pods come and go far more often than Ingresses change. When the new Snapshot differs from the one serving
only in the endpoints of some backends (what `config.endpoint_update.refresh_endpoints` produces, and what a
full compile produces after a slice change), `Dataplane.install` need not rebuild the route table (host
index, sorted candidates) nor touch every balancer: `swap_endpoints` returns a new `Serving` that shares the
old one's `RouteTable`, balancer map, hash keys and header roles, and tells only the balancers of the changed
backends their new endpoints. Anything else (a route added, removed or reordered, another balancing or TLS
policy, other settings) returns None and `Dataplane` builds from scratch as before.

Why sharing the table is right: a `Route` in the table still carries its previous `backend` (with the old
endpoint list), but the hot path never reads endpoints from a route. It picks through
`serving.balancers[route.balancer_key]`, and the balancer key depends on the backend's key and the way of
balancing, not on its endpoints; the balancer is the live object that was just told the new endpoints (as
the full rebuild does too, with `Balancer.update`). `Serving.snapshot` is the new Snapshot, so whatever
wants the current endpoints (admin API, check) reads them there. Requests in flight keep the `Serving` they
started with; live state keyed by endpoint (in-flight counts, EWMA) stays in the shared registry, which
forgets only the endpoints no backend has any more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pyngress.balancing import Balancer
from pyngress.model import Backend, Endpoint, Route, Snapshot

if TYPE_CHECKING:
    from pyngress.runtime.state import Serving

MAX_COMPARED = 64  # routes compared field by field, plus one in eight of the table (see swap_endpoints)


def swap_endpoints(current: Serving, snapshot: Snapshot, balancers: Mapping[str, Balancer],
                   select: Callable[[Backend], Sequence[Endpoint]] | None = None) -> Serving | None:
    """The `Serving` for `snapshot` built from `current` when only endpoints changed, else None. `select`:
    which of a backend's endpoints its balancers get (issue 7: health, terminating, slow start), as in the
    full rebuild; None: all of them."""
    old = current.snapshot
    if not _same_frame(old, snapshot):
        return None
    # config.endpoint_update keeps untouched routes as they were (`is`): only the others need comparing. A
    # fresh compile (file mode, a full rebuild) has no route in common: comparing them all costs more than the
    # rebuild it would save, so few enough must differ
    differing = [(b, a) for b, a in zip(old.routes, snapshot.routes, strict=True) if b is not a]
    if len(differing) > MAX_COMPARED + len(old.routes) // 8:
        return None
    changed: dict[str, Backend] = {}  # balancer key -> its backend, with the new endpoints
    backends: dict[str, tuple[Backend, Backend]] = {}  # backend key -> (before, after), the changed ones
    for before, after in differing:
        moved = _endpoints_moved(before, after)
        if moved is None:
            return None
        if moved:
            changed[after.balancer_key] = after.backend
            backends[after.backend.key] = (before.backend, after.backend)
    default_route = current.default_route
    if old.default_backend is not None and snapshot.default_backend is not None and default_route is not None:
        moved = _backend_moved(old.default_backend, snapshot.default_backend)
        if moved is None:
            return None
        if moved:
            default_route = dataclasses.replace(default_route, backend=snapshot.default_backend)
            changed[default_route.balancer_key] = snapshot.default_backend
            backends[snapshot.default_backend.key] = (old.default_backend, snapshot.default_backend)
    if not all(key in balancers for key in changed):
        return None  # cannot happen when the keys matched; be safe rather than lose a balancer
    for key, backend in changed.items():
        balancers[key].update(select(backend) if select is not None else backend.endpoints)
    endpoint_keys = current.endpoint_keys
    if backends:
        endpoint_keys = _endpoint_keys(current.endpoint_keys, backends, snapshot)
        current.stats.retain(endpoint_keys)
    return dataclasses.replace(current, snapshot=snapshot, default_route=default_route,
                               endpoint_keys=endpoint_keys)


def _same_frame(old: Snapshot, new: Snapshot) -> bool:
    """Whatever `Serving` derives from, apart from the routes' backends, is the same."""
    if len(old.routes) != len(new.routes):
        return False
    if old.settings is not new.settings and old.settings != new.settings:
        return False
    if (old.default_backend is None) != (new.default_backend is None):
        return False
    return old.default_balance == new.default_balance and old.default_affinity == new.default_affinity


def _endpoints_moved(before: Route, after: Route) -> bool | None:
    """False: the same route; True: only its backend's endpoints differ; None: something else differs."""
    moved = _backend_moved(before.backend, after.backend)
    if moved is None:
        return None
    if moved:
        after = dataclasses.replace(after, backend=before.backend)
    return moved if after == before else None


def _backend_moved(before: Backend, after: Backend) -> bool | None:
    if before is after or before == after:
        return False
    if dataclasses.replace(after, endpoints=before.endpoints) != before:
        return None  # another key, port or problem
    return True


def _endpoint_keys(keys: frozenset[str], changed: Mapping[str, tuple[Backend, Backend]],
                   snapshot: Snapshot) -> frozenset[str]:
    """`keys` (every endpoint of the previous Snapshot) updated for the changed backends. An endpoint they no
    longer have may still be another backend's (one Pod behind two Services): only then are the others read."""
    before = {e.key for old, _ in changed.values() for e in old.endpoints}
    after = {e.key for _, new in changed.values() for e in new.endpoints}
    gone = before - after
    if gone:
        unchanged = {r.backend.key: r.backend for r in snapshot.routes if r.backend.key not in changed}
        if snapshot.default_backend is not None and snapshot.default_backend.key not in changed:
            unchanged[snapshot.default_backend.key] = snapshot.default_backend
        gone -= {e.key for b in unchanged.values() for e in b.endpoints if e.key in gone}
    return (keys - gone) | after if gone or not after <= keys else keys
