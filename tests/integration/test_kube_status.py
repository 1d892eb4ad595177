"""Leader election over a Lease and status publishing, against the test API server (short durations)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from harness import wait_until
from kube_support import fake_cluster, ingress, ingress_class, running_source, service

from pyngress.sources.kubernetes import KubeClient
from pyngress.sources.kubernetes.election import LeaderElector
from pyngress.sources.kubernetes.status import StatusPublisher

LB = {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}


@contextlib.asynccontextmanager
async def elector(client: KubeClient, identity: str, *, release: bool = True
                  ) -> AsyncIterator[tuple[LeaderElector, asyncio.Task[None]]]:
    e = LeaderElector(client, "default", "pyngress-leader", identity, lease_duration=1.0, renew_deadline=0.6,
                      retry_period=0.1, release_on_stop=release, log=logging.getLogger(f"test.{identity}"))
    task = asyncio.create_task(e.run())
    try:
        yield e, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _lease_holder(api: object) -> str:
    leases = [o for (k, _, _), o in api.objects.items() if k.kind == "Lease"]  # type: ignore[attr-defined]
    return str(leases[0]["spec"]["holderIdentity"]) if leases else ""


async def test_one_leader_and_leadership_moves_when_it_stops_renewing() -> None:
    async with fake_cluster() as cluster, elector(cluster.client, "a", release=False) as (a, a_task):
        await asyncio.wait_for(a.leading.wait(), 5)
        async with elector(cluster.client, "b") as (b, _):
            await asyncio.sleep(0.5)  # several retry periods: b must stay a follower while a renews
            assert a.is_leader and not b.is_leader and _lease_holder(cluster.api) == "a"
            a_task.cancel()  # a stops renewing without releasing, as a crashed replica would
            with contextlib.suppress(asyncio.CancelledError):
                await a_task
            assert _lease_holder(cluster.api) == "a"
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.wait_for(b.leading.wait(), 5)
            assert _lease_holder(cluster.api) == "b"
            lease = next(o for (k, _, _), o in cluster.api.objects.items() if k.kind == "Lease")
            assert lease["spec"]["leaseTransitions"] == 1
            assert loop.time() - start >= 0.9  # not before the lease duration (1 s) ran out


async def test_a_stopped_leader_releases_and_the_follower_takes_over_fast() -> None:
    async with fake_cluster() as cluster, elector(cluster.client, "a") as (a, a_task):
        await asyncio.wait_for(a.leading.wait(), 5)
        async with elector(cluster.client, "b") as (b, _):
            a_task.cancel()  # a clean stop: the finally clause releases the Lease
            with contextlib.suppress(asyncio.CancelledError):
                await a_task
            assert _lease_holder(cluster.api) == ""  # released: b need not wait out the duration
            await asyncio.wait_for(b.leading.wait(), 5)
            assert _lease_holder(cluster.api) == "b"


def _status_puts(api: object) -> int:
    return sum(1 for m, p, _ in api.requests if m == "PUT" and p.endswith("/status"))  # type: ignore[attr-defined]


async def test_status_written_once_by_the_leader_not_the_follower() -> None:
    async with fake_cluster() as cluster:
        api = cluster.api
        api.put_object(ingress_class())
        api.put_object(ingress("web", "a.example.com", "web"))
        api.put_object(ingress("theirs", "b.example.com", "web", cls="other"))
        api.put_object({**service("pyngress"), "status": LB})
        async with contextlib.AsyncExitStack() as exits:
            publishers = []
            for name in ("a", "b"):
                e, _ = await exits.enter_async_context(elector(cluster.client, name))
                running = await exits.enter_async_context(running_source(cluster.client))
                p = StatusPublisher(cluster.client, running.source, e, publish_service="default/pyngress",
                                    resync=0.2)
                task = asyncio.create_task(p.run())
                exits.callback(task.cancel)
                publishers.append((e, p))
            await wait_until(lambda: _status_puts(api) >= 1, what="a status write")
            web = next(o for (k, _, n), o in api.objects.items() if k.kind == "Ingress" and n == "web")
            assert web["status"] == LB
            await asyncio.sleep(0.6)  # three resyncs of both replicas: nothing more to write
            assert _status_puts(api) == 1
            leader, follower = sorted(publishers, key=lambda ep: not ep[0].is_leader)
            assert leader[1].counters.writes == 1 and follower[1].counters.writes == 0
            theirs = next(o for (k, _, n), o in api.objects.items() if k.kind == "Ingress" and n == "theirs")
            assert "status" not in theirs  # another class: not ours to write


async def test_status_conflict_is_retried_with_the_fresh_object() -> None:
    async with fake_cluster() as cluster:
        api = cluster.api
        api.put_object(ingress("web", "a.example.com", "web"))
        api.fail_next(1, 409, match=lambda r: r.method == "PUT" and r.path.endswith("/status"))
        async with running_source(cluster.client) as running:
            p = StatusPublisher(cluster.client, running.source, None, addresses=["203.0.113.9", "lb.example.com"])
            await asyncio.wait_for(running.source.synced.wait(), 5)
            await p.sync()
            assert p.counters.conflicts == 1 and p.counters.writes == 1 and _status_puts(api) == 2
            gets = [m for m, path, _ in api.requests if m == "GET" and path.endswith("/ingresses/web")]
            assert len(gets) == 2  # read again after the conflict
            web = next(o for (k, _, n), o in api.objects.items() if k.kind == "Ingress" and n == "web")
            assert web["status"]["loadBalancer"]["ingress"] == [{"hostname": "lb.example.com"},
                                                                 {"ip": "203.0.113.9"}]
            await wait_until(lambda: running.source.stores["Ingress"].entries["default/web"].status is not None,
                             what="the status in the cache")
            await p.sync()  # the cache now shows our status: nothing to write
            assert _status_puts(api) == 2 and running.source.counters.applied == 1  # status is no rebuild
