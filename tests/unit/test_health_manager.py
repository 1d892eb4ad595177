"""HealthManager with a fake clock and a real Dataplane (no event loop): what the balancers end up holding."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from types import MappingProxyType

from pyngress.balancing import PickContext
from pyngress.model import Backend, Endpoint, HealthSpec, PathType, ProxySettings, Route, Snapshot
from pyngress.runtime.health import HealthManager
from pyngress.runtime.state import Dataplane

A, B, C = (Endpoint(f"10.0.0.{i}", 80, name=n) for i, n in ((1, "a"), (2, "b"), (3, "c")))


def snap(version: int, *endpoints: Endpoint, slow_start: float = 0.0, **settings: float) -> Snapshot:
    backend = Backend("default/web:80", "default", "web", "80", tuple(endpoints),
                      health=HealthSpec(slow_start=slow_start))
    route = Route("", "/", PathType.PREFIX, backend, "default/web")
    return Snapshot(version, (route,), backends=MappingProxyType({backend.key: backend}),
                    settings=ProxySettings(**settings))  # type: ignore[arg-type]


class Plane:
    def __init__(self, first: Snapshot) -> None:
        self.health = HealthManager(0.0, first.settings)
        self.health.prepare(first, 0.0)
        self.dataplane = Dataplane(first, rng=random.Random(1), select=self.health.endpoints_for)
        self.health.installed(self.dataplane.serving)

    def install(self, snapshot: Snapshot, now: float) -> None:
        self.health.prepare(snapshot, now)
        self.health.installed(self.dataplane.install(snapshot))

    def spread(self, n: int) -> Counter[str]:
        balancer = self.dataplane.serving.balancers["default/web:80"]
        picks = (balancer.pick(PickContext()) for _ in range(n))
        return Counter(e.name for e in picks if e is not None)


def test_slow_start_ramps_on_ticks_and_ends_at_full_weight() -> None:
    plane = Plane(snap(1, A, B, slow_start=10.0))
    plane.install(snap(2, A, B, C, slow_start=10.0), now=100.0)
    assert plane.spread(210)["c"] == 10  # weight 1 against 10 + 10
    plane.health.tick(105.0)
    assert plane.spread(250)["c"] == 50  # half its weight: 5 of 25
    plane.health.tick(109.9)
    plane.health.tick(111.3)  # past the window: one last rebuild at full weight, even with a late tick
    assert plane.spread(300)["c"] == 100
    refreshes = plane.health.refreshes
    plane.health.tick(112.0)
    assert plane.health.refreshes == refreshes  # nothing more to do


def test_endpoints_present_at_start_do_not_ramp() -> None:
    plane = Plane(snap(1, A, B, slow_start=10.0))
    assert plane.spread(200) == {"a": 100, "b": 100}


def test_ejection_and_return_rebuild_the_balancer() -> None:
    plane = Plane(snap(1, A, B, C))
    rec = plane.health.record(B.key)
    for _ in range(5):
        plane.health.failed(rec)
    assert set(plane.spread(20)) == {"a", "c"}
    plane.health.tick(31.0)
    assert set(plane.spread(30)) == {"a", "b", "c"}


def test_link_state_ignores_unknown_keys_and_unejects() -> None:
    plane = Plane(snap(1, A, B, C))
    plane.health.set_active_down([B.key, "10.9.9.9:80"])
    assert plane.health.active_down == {B.key}
    assert set(plane.spread(20)) == {"a", "c"}
    plane.health.set_active_down([])
    assert set(plane.spread(30)) == {"a", "b", "c"}


def test_panic_is_entered_and_left() -> None:
    plane = Plane(snap(1, A, B))
    plane.health.set_active_down([A.key, B.key])
    assert plane.health.panic == {"default/web:80"}
    assert set(plane.spread(10)) == {"a", "b"}
    plane.health.set_active_down([A.key])
    assert plane.health.panic == set() and set(plane.spread(10)) == {"b"}


def test_removed_endpoints_are_aborted_after_worker_shutdown_timeout() -> None:
    plane = Plane(snap(1, A, B, worker_shutdown_timeout=240.0))
    aborted: list[str] = []
    plane.health.abort_endpoint = lambda key: aborted.append(key) or 1
    plane.install(snap(2, A, worker_shutdown_timeout=240.0), now=10.0)
    plane.health.tick(249.0)
    assert aborted == []
    plane.health.tick(250.0)
    assert aborted == [B.key]
    plane.health.tick(600.0)
    assert aborted == [B.key]  # once


def test_a_removed_endpoint_added_back_is_not_aborted() -> None:
    plane = Plane(snap(1, A, B))
    aborted: list[str] = []
    plane.health.abort_endpoint = lambda key: aborted.append(key) or 1
    plane.install(snap(2, A), now=10.0)
    plane.install(snap(3, A, replace(B, name="b2")), now=20.0)
    plane.health.tick(1000.0)
    assert aborted == []


def test_budget_counts_per_backend() -> None:
    plane = Plane(snap(1, A, B, retry_budget_min_retries=2, retry_budget_percent=20.0))
    assert [plane.health.budget_allows("default/web:80") for _ in range(3)] == [True, True, False]
    assert plane.health.budget_allows("unknown") is True
    assert plane.health.retries == 3


def test_a_new_prober_holds_its_verdicts_back_until_every_endpoint_could_fail() -> None:
    from pyngress.model import ActiveCheck

    check = ActiveCheck(path="/h", interval=5.0, timeout=2.0, unhealthy_threshold=3)
    first = snap(1, A, B)
    backend = replace(first.routes[0].backend, health=HealthSpec(active=check))
    plane = Plane(replace(first, backends=MappingProxyType({backend.key: backend}),
                          routes=(replace(first.routes[0], backend=backend),)))
    sent: list[frozenset[str]] = []
    plane.health.publish_after_warmup(sent.append, now=0.0)
    assert plane.health.publish_from == 5.0 * 4 + 2.0
    plane.health.tick(10.0)
    plane.health.set_active(A.key, False)
    assert sent == []  # too early: the others keep what the previous prober told them
    plane.health.tick(22.0)
    assert sent == [frozenset({A.key})]


def test_an_endpoint_only_change_keeps_health_decisions() -> None:
    # issue 6's fast path (runtime.endpoint_swap) updates balancers without a rebuild: health still applies
    plane = Plane(snap(1, A, B, C))
    rec = plane.health.record(B.key)
    for _ in range(5):
        plane.health.failed(rec)
    d = Endpoint("10.0.0.4", 80, name="d")
    plane.install(snap(2, A, B, C, d), now=1.0)
    assert set(plane.spread(30)) == {"a", "c", "d"}  # b is still ejected
    plane.install(snap(3, A, replace(C, terminating=True), d), now=2.0)
    assert set(plane.spread(30)) == {"a", "d"}  # c is terminating: no new requests
