"""`Dataplane.install` of an endpoint-only change (issue 6, runtime.endpoint_swap): the route table object is
kept, only the balancers of the changed backends are told, live state carries over; any other change rebuilds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import MappingProxyType

from pyngress.balancing import Balancer, PickContext
from pyngress.config.endpoint_update import refresh_endpoints
from pyngress.model import Backend, Endpoint, PathType, ProxySettings, Route, Snapshot
from pyngress.runtime.state import Dataplane


def _backend(name: str, *ports: int) -> Backend:
    return Backend(f"default/{name}:80", "default", name, "80", tuple(Endpoint("127.0.0.1", p) for p in ports))


def _snapshot(*backends: Backend, default: Backend | None = None, version: int = 1,
              settings: ProxySettings | None = None, extra: Sequence[Route] = ()) -> Snapshot:
    routes = tuple(Route(f"{b.service}.example.com", "/", PathType.PREFIX, b, f"default/{b.service}")
                   for b in backends) + tuple(extra)
    everything = {b.key: b for b in (*backends, *([default] if default else []))}
    return Snapshot(version, routes=routes, default_backend=default, backends=MappingProxyType(everything),
                    settings=settings or ProxySettings())


def _with(snapshot: Snapshot, backend: Backend, version: int = 2) -> Snapshot:
    """`snapshot` with `backend` swapped in where its key is used, unchanged routes kept as they are (what
    config.endpoint_update.refresh_endpoints produces)."""
    routes = tuple(dataclasses.replace(r, backend=backend) if r.backend.key == backend.key else r
                   for r in snapshot.routes)
    default = backend if snapshot.default_backend and snapshot.default_backend.key == backend.key \
        else snapshot.default_backend
    backends = MappingProxyType({**snapshot.backends, backend.key: backend})
    return dataclasses.replace(snapshot, version=version, routes=routes, default_backend=default,
                               backends=backends)


class Spy:
    """Wraps a balancer and counts `update` calls."""

    def __init__(self, inner: Balancer) -> None:
        self.inner, self.updates = inner, 0

    def pick(self, ctx: PickContext) -> Endpoint | None:
        return self.inner.pick(ctx)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self.updates += 1
        self.inner.update(endpoints)


def _spy(dataplane: Dataplane, key: str) -> Spy:
    spy = Spy(dataplane._balancers[key])
    dataplane._balancers[key] = spy  # type: ignore[assignment]
    return spy


def _picks(dataplane: Dataplane, key: str, n: int) -> list[int]:
    balancer = dataplane.serving.balancers[key]
    return [e.port for e in (balancer.pick(PickContext(now=0.0)) for _ in range(n)) if e is not None]


def test_endpoint_change_keeps_the_table_and_updates_only_its_balancer() -> None:
    a, b = _backend("a", 1, 2), _backend("b", 3)
    dataplane = Dataplane(_snapshot(a, b))
    before = dataplane.serving
    spy_a, spy_b = _spy(dataplane, a.key), _spy(dataplane, b.key)
    new = _with(before.snapshot, _backend("a", 2, 4))
    serving = dataplane.install(new)
    assert serving is not before and serving.snapshot is new
    assert serving.table is before.table  # routes not rebuilt
    assert spy_a.updates == 1 and spy_b.updates == 0  # b's balancer untouched
    assert serving.balancers[b.key] is spy_b and serving.balancers[a.key] is spy_a
    assert sorted(_picks(dataplane, a.key, 4)) == [2, 2, 4, 4]  # traffic follows the new endpoints
    assert serving.endpoint_keys == {"127.0.0.1:2", "127.0.0.1:4", "127.0.0.1:3"}
    # requests in flight hold the old Serving: it is a separate object, left as it was
    assert before.snapshot is not new and before.endpoint_keys == {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}


def test_live_state_of_endpoints_that_stay_carries_over_and_gone_ones_are_forgotten() -> None:
    a = _backend("a", 1, 2)
    dataplane = Dataplane(_snapshot(a))
    stats = dataplane.serving.stats
    stats.get("127.0.0.1:1").inflight = 0
    stats.get("127.0.0.1:2").inflight = 3  # requests in flight on pod 2
    serving = dataplane.install(_with(dataplane.serving.snapshot, _backend("a", 2, 5)))
    assert serving.stats is stats and stats.get("127.0.0.1:2").inflight == 3
    assert "127.0.0.1:1" not in stats._entries  # gone and idle: forgotten


def test_a_default_backend_endpoint_change_takes_the_fast_path_too() -> None:
    a, d = _backend("a", 1), _backend("d", 7)
    dataplane = Dataplane(_snapshot(a, default=d))
    before = dataplane.serving
    serving = dataplane.install(_with(before.snapshot, _backend("d", 8)))
    assert serving.table is before.table and serving.default_route is not None
    assert serving.default_route.backend.endpoints == (Endpoint("127.0.0.1", 8),)
    assert _picks(dataplane, serving.default_route.balancer_key, 2) == [8, 8]


def test_the_config_fast_path_result_installs_without_a_rebuild() -> None:
    from pyngress.model import EndpointPort, EndpointSlice, Meta, Service, ServicePort, SliceEndpoint

    svc = Service(Meta("a", "default"), ports=(ServicePort(80, "http"),))
    ref_backend = Backend("default/a:http", "default", "a", "http", (Endpoint("127.0.0.1", 1),))
    snap = _snapshot(ref_backend)
    new_slice = EndpointSlice(Meta("a-1", "default"), "a", endpoints=(SliceEndpoint(("127.0.0.1",)),),
                              ports=(EndpointPort(9, "http"),))
    refreshed = refresh_endpoints(snap, {("default", "a")}, {("default", "a"): svc},
                                  {("default", "a"): [new_slice]}, {}, version=2)
    assert refreshed is not None
    dataplane = Dataplane(snap)
    table = dataplane.serving.table
    assert dataplane.install(refreshed).table is table
    assert _picks(dataplane, ref_backend.key, 1) == [9]


def test_any_other_change_rebuilds() -> None:
    a, b = _backend("a", 1), _backend("b", 2)
    base = _snapshot(a, b)
    other_route = Route("c.example.com", "/", PathType.PREFIX, b, "default/c")
    changes = {
        "a route added": _snapshot(a, b, extra=[other_route], version=2),
        "a route removed": _snapshot(a, version=2),
        "a path changed": dataclasses.replace(base, version=2, routes=(
            dataclasses.replace(base.routes[0], path="/x"), base.routes[1])),
        "settings": _snapshot(a, b, version=2, settings=ProxySettings(keep_alive=5.0)),
        "a backend's problem": _with(base, dataclasses.replace(a, problem="gone")),
        "a default backend added": _snapshot(a, b, default=b, version=2),
    }
    for what, new in changes.items():
        dataplane = Dataplane(base)
        table = dataplane.serving.table
        serving = dataplane.install(new)
        assert serving.table is not table, what
        assert serving.snapshot is new, what


def test_a_fresh_compile_of_many_routes_is_not_compared_route_by_route() -> None:
    backends = [_backend(f"s{i}", i + 1) for i in range(200)]
    old, new = _snapshot(*backends), _snapshot(*backends, version=2)  # equal, but no route object shared
    dataplane = Dataplane(old)
    table = dataplane.serving.table
    assert dataplane.install(new).table is not table  # rebuilt: cheaper than 200 field-by-field comparisons
    few = _snapshot(*backends[:10])
    dataplane = Dataplane(few)
    table = dataplane.serving.table
    assert dataplane.install(_snapshot(*backends[:10], version=2)).table is table  # a few: compared, kept


def test_an_endpoint_another_backend_still_has_stays_known() -> None:
    a, b = _backend("a", 1, 2), _backend("b", 2)  # the pod on port 2 is behind both Services
    dataplane = Dataplane(_snapshot(a, b))
    serving = dataplane.install(_with(dataplane.serving.snapshot, _backend("a", 1)))
    assert serving.endpoint_keys == {"127.0.0.1:1", "127.0.0.1:2"}
    serving = dataplane.install(_with(serving.snapshot, _backend("a", 1, 3), version=3))
    assert serving.endpoint_keys == {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
    serving = dataplane.install(_with(serving.snapshot, _backend("b", 4), version=4))
    assert serving.endpoint_keys == {"127.0.0.1:1", "127.0.0.1:3", "127.0.0.1:4"}
    assert serving.endpoint_keys == Dataplane(serving.snapshot).serving.endpoint_keys  # as a full build says
