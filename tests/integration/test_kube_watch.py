"""The watch loop against the test API server's fault hooks: relist after 410, clean closes, stalls, 429 storms,
paged lists. Each test drives one Reflector (or the whole source) and counts what happened."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from harness import async_test, wait_until
from kube_support import FAST, endpoint_slice, fake_cluster, ingress, running_source, service

from pyngress.config import CompileOptions
from pyngress.sources.kubernetes import KubeClient, KubernetesSource, Reflector, WatchSettings
from pyngress.sources.kubernetes.resources import SERVICE, Resource
from pyngress.sources.kubernetes.store import Change, Store


@dataclasses.dataclass
class Watched:
    reflector: Reflector
    changes: list[Change]

    @property
    def log(self) -> list[tuple[str, str]]:
        return [(c.type, c.key) for c in self.changes]


@contextlib.asynccontextmanager
async def reflecting(client: KubeClient, resource: Resource = SERVICE, settings: WatchSettings = FAST
                     ) -> AsyncIterator[Watched]:
    changes: list[Change] = []

    def record(batch: Sequence[Change]) -> None:
        changes.extend(batch)

    reflector = Reflector(client, resource, "", Store(resource.kind), record, settings=settings,
                          rng=random.Random(0), log=logging.getLogger("test.kube"))
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(reflector.synced.wait(), 5)
        yield Watched(reflector, changes)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _svc(name: str, port_name: str = "http") -> dict[str, Any]:
    return service(name, port_name=port_name)


@async_test
async def test_delete_during_disconnection_is_applied_after_the_410_relist() -> None:
    async with fake_cluster() as cluster, reflecting(cluster.client) as w:
        api = cluster.api
        for name in ("a", "b", "c"):
            api.put_object(_svc(name))
        await wait_until(lambda: len(w.reflector.store.entries) == 3, what="three services")
        api.fail_next(3, 503, match=lambda r: r.query.get("watch") == "true")  # keep it disconnected
        api.abort_connections()
        api.delete_object("Service", "default", "b")  # while nobody watches
        api.put_object(_svc("d"))
        api.compact()  # and the history that would have replayed it is gone
        await wait_until(lambda: "default/b" not in w.reflector.store.entries, what="b deleted")
        assert w.reflector.counters.relists_after_gone == 1
        assert ("DELETED", "default/b") in w.log and ("ADDED", "default/d") in w.log
        assert set(w.reflector.store.entries) == {"default/a", "default/c", "default/d"}
        watches = [q for _, p, q in api.requests if p.endswith("/services") and q.get("watch") == "true"]
        assert len(watches) >= 4 and all(q.get("resourceVersion") for q in watches)  # never without one
        assert all(q.get("allowWatchBookmarks") == "true" and 300 <= int(q["timeoutSeconds"]) < 600
                   for q in watches)


@async_test
async def test_no_missed_or_duplicate_events_across_clean_closes() -> None:
    async with fake_cluster() as cluster, reflecting(cluster.client) as w:
        api = cluster.api
        writes: list[tuple[str, str]] = []
        for i in range(30):
            name = f"s{i % 7}"
            key = f"default/{name}"
            existed = key in _alive(writes)
            if i % 5 == 4 and key in _alive(writes):
                api.delete_object("Service", "default", name)
                writes.append(("DELETED", key))
            else:
                api.put_object(_svc(name, port_name=f"p{i}"))
                writes.append(("MODIFIED" if existed else "ADDED", key))
            if i % 3 == 0:  # the stream ends cleanly mid-sequence: re-watch from the last RV
                watches = w.reflector.counters.watches
                await wait_until(lambda: bool(api.watchers), what="a watch")
                api.close_watches()
                await wait_until(lambda n=watches: w.reflector.counters.watches > n, what="a new watch")
        await wait_until(lambda: len(w.changes) >= len(writes), what="every write seen")
        await asyncio.sleep(0.05)  # a duplicate would arrive right behind: give it the chance
        assert w.log == writes
        assert w.reflector.counters.watches >= 10 and w.reflector.counters.lists == 1  # 10 closes, no relist


def _alive(writes: list[tuple[str, str]]) -> set[str]:
    alive: set[str] = set()
    for t, k in writes:
        (alive.discard if t == "DELETED" else alive.add)(k)
    return alive


async def test_stalled_stream_is_detected_and_resumed() -> None:
    settings = dataclasses.replace(FAST, inactivity=0.3)
    async with fake_cluster() as cluster, reflecting(cluster.client, settings=settings) as w:
        await wait_until(lambda: bool(cluster.api.watchers), what="a watch")
        cluster.api.stall_watches()  # the stream stays open but says nothing more
        cluster.api.put_object(_svc("late"))
        await wait_until(lambda: "default/late" in w.reflector.store.entries, what="the late service")
        assert w.reflector.counters.stalls == 1 and w.reflector.counters.watches == 2
        assert w.reflector.counters.lists == 1  # resumed from its resourceVersion, no relist


async def test_bookmarks_advance_the_resource_version() -> None:
    async with fake_cluster(bookmark_interval=0.05) as cluster, reflecting(cluster.client) as w:
        from pyngress.sources.kubernetes.resources import INGRESS

        cluster.api.put_object(ingress("x", "x.example.com", "web"))  # another kind moves the global RV
        await wait_until(lambda: w.reflector.store.resource_version == str(cluster.api.rv), what="bookmark")
        assert w.changes == [] and INGRESS.kind == "Ingress"


async def test_429_storm_backs_off() -> None:
    settings = dataclasses.replace(FAST, backoff_base=0.05, backoff_cap=2.0)
    async with fake_cluster() as cluster:
        cluster.api.fail_next(1000, 429, retry_after="0")
        changes: list[Change] = []
        reflector = Reflector(cluster.client, SERVICE, "", Store("Service"), changes.extend, settings=settings,
                              rng=random.Random(0))
        task = asyncio.create_task(reflector.run())
        await asyncio.sleep(1.5)  # the storm lasts 1.5 s: count what we sent into it
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sent = cluster.api.count("/services")
        assert 3 <= sent <= 8, f"{sent} requests in 1.5 s of 429s"  # 0.05 doubling: ~6, never hundreds
        assert not reflector.synced.is_set()


async def test_retry_after_is_honoured() -> None:
    async with fake_cluster() as cluster:
        cluster.api.fail_next(1, 429, retry_after="1")
        changes: list[Change] = []
        reflector = Reflector(cluster.client, SERVICE, "", Store("Service"), changes.extend, settings=FAST)
        task = asyncio.create_task(reflector.run())
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await asyncio.wait_for(reflector.synced.wait(), 5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert loop.time() - start >= 1.0 and reflector.counters.delays[0] >= 1.0


async def test_500_then_recovers_and_lists_in_pages() -> None:
    async with fake_cluster() as cluster:
        for i in range(23):
            cluster.api.put_object(_svc(f"s{i:02}"))
        cluster.api.fail_next(2, 500)
        settings = dataclasses.replace(FAST, page_size=10)
        async with reflecting(cluster.client, settings=settings) as w:
            assert len(w.reflector.store.entries) == 23 and len(w.changes) == 23
            assert w.reflector.counters.lists == 3 and w.reflector.counters.errors == 2
            pages = [q for m, p, q in cluster.api.requests if p.endswith("/services") and "watch" not in q]
            assert [q.get("limit") for q in pages[-3:]] == ["10"] * 3 and "continue" in pages[-1]


async def test_source_coalesces_a_burst_into_one_rebuild() -> None:
    async with fake_cluster() as cluster, running_source(cluster.client, debounce=0.2) as running:
        await asyncio.wait_for(running.source.synced.wait(), 5)
        full = running.source.counters.full
        cluster.api.put_object(service("web"))
        for i in range(20):  # a rollout's worth of slice updates, all within the debounce window
            cluster.api.put_object(endpoint_slice("web-1", "web", [], ready=i % 2 == 0))
        cluster.api.put_object(ingress("web", "a.example.com", "web"))
        await wait_until(lambda: running.source.counters.full > full, what="a rebuild")
        await asyncio.sleep(0.3)  # past another debounce: nothing else may follow
        assert running.source.counters.full == full + 1 and running.source.counters.fast == 0
        assert len(running.applied) == 2  # the initial empty build and the burst


async def test_endpoint_only_change_takes_the_fast_path_and_unchanged_is_not_swapped() -> None:
    async with fake_cluster() as cluster:
        cluster.api.put_object(service("web"))
        cluster.api.put_object(ingress("web", "a.example.com", "web"))
        async with running_source(cluster.client) as running:
            await asyncio.wait_for(running.source.synced.wait(), 5)
            cluster.api.put_object(endpoint_slice("web-1", "web", []))
            await wait_until(lambda: running.source.counters.fast == 1, what="fast path")
            # an empty slice leaves the backend as it was: no swap
            assert running.source.counters.unchanged == 1 and len(running.applied) == 1
            from harness import EchoBackend

            pod = await EchoBackend.start("pod-x")
            try:
                cluster.api.put_object(endpoint_slice("web-1", "web", [pod]))
                await wait_until(lambda: len(running.applied) == 2, what="swap")
                assert running.source.counters.fast == 2 and running.source.counters.full == 1
                assert running.applied[-1].routes[0].backend.endpoints[0].port == pod.port
            finally:
                await pod.close()


async def test_pods_are_watched_only_while_a_service_weighs_by_cpu() -> None:
    async with fake_cluster() as cluster:
        api = cluster.api
        api.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default"},
                        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}})
        api.put_object(service("web"))
        async with running_source(cluster.client) as running:
            source = running.source
            await asyncio.wait_for(source.synced.wait(), 5)
            assert "Pod" not in source.reflectors and api.count("/pods") == 0
            weighted = service("web")
            weighted["metadata"]["annotations"] = {"pyngress.io/weight-by": "cpu"}
            api.put_object(weighted)
            await wait_until(lambda: "default/web-0" in source.stores["Pod"].entries, what="pods listed")
            api.put_object(service("web"))  # the annotation is gone: so is the pod watch and its cache
            await wait_until(lambda: "Pod" not in source.reflectors, what="pod watch stopped")
            assert source.stores["Pod"].entries == {}


async def test_controller_configmap_change_rebuilds_settings() -> None:
    async with fake_cluster() as cluster:
        api = cluster.api
        options = CompileOptions(configmap="ingress/pyngress")
        async with running_source(cluster.client, options=options) as running:
            await asyncio.wait_for(running.source.synced.wait(), 5)
            default_timeout = running.applied[-1].settings.proxy_read_timeout
            other = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"proxy-read-timeout": "5"},
                     "metadata": {"name": "other", "namespace": "ingress"}}
            api.put_object(other)  # not ours: filtered out on the server
            ours = {**other, "metadata": {"name": "pyngress", "namespace": "ingress"}}
            api.put_object(ours)
            await wait_until(lambda: running.applied[-1].settings.proxy_read_timeout == 5.0, what="settings")
            assert default_timeout != 5.0
            assert list(running.source.stores["ConfigMap"].entries) == ["ingress/pyngress"]
            api.delete_object("ConfigMap", "ingress", "pyngress")
            await wait_until(lambda: running.applied[-1].settings.proxy_read_timeout == default_timeout,
                             what="defaults again")


async def test_a_reflector_that_dies_stops_the_source_loudly() -> None:
    async with fake_cluster() as cluster:
        cluster.api.put_object(service("web"))
        source = KubernetesSource(cluster.client, CompileOptions(), lambda s: None, settings=FAST,
                                  log=logging.getLogger("test.kube"))

        def bug(changes: Sequence[Change]) -> None:
            raise KeyError("a bug while handling changes")

        source._changed = bug  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="a Kubernetes watch failed"):
            await asyncio.wait_for(source.run(), 5)
        assert not source.synced.is_set() and source.reflectors == {}  # every other watch stopped too


async def test_watches_that_end_at_once_back_off() -> None:
    settings = dataclasses.replace(FAST, backoff_base=0.05, backoff_cap=0.5)
    async with fake_cluster() as cluster, reflecting(cluster.client, settings=settings) as w:
        api = cluster.api
        api.fail_next(1000, 200, match=lambda r: r.query.get("watch") == "true")  # an empty 200 at once
        api.close_watches()
        await asyncio.sleep(1.0)
        watches = api.count("/services", watch=True)
        assert watches <= 10, f"{watches} watches in 1 s"  # backoff 0.05 doubling, capped 0.5: about 6
        assert w.reflector.counters.errors >= 2


async def test_namespace_restricts_what_is_watched() -> None:
    async with fake_cluster() as cluster:
        api = cluster.api
        for ns in ("shop", "other"):
            api.put_object(service("web", namespace=ns))
            api.put_object(ingress("web", f"{ns}.example.com", "web", namespace=ns))
        source = KubernetesSource(cluster.client, CompileOptions(), lambda s: None, namespace="shop",
                                  settings=FAST, log=logging.getLogger("test.kube"))
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(source.synced.wait(), 5)
            assert source.current is not None and [r.host for r in source.current.routes] == ["shop.example.com"]
            assert set(source.stores["Service"].entries) == {"shop/web"}
            paths = {p for _, p, _ in api.requests if p.endswith(("/services", "/ingresses"))}
            assert paths == {"/api/v1/namespaces/shop/services",
                             "/apis/networking.k8s.io/v1/namespaces/shop/ingresses"}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
