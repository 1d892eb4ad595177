"""LoadBalancer Service status (issue 9) and clearing status on shutdown (`--update-status-on-shutdown`),
against the test API server: the leader writes the Services it serves, once; the follower never; only bound
ports are listed; a Service no longer served is cleared; 409 is retried; the last replica clears on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness import running_proxy, wait_until
from kube_support import fake_cluster, ingress, ingress_class, running_source
from l4_harness import free_port, service_manifests
from test_kube_status import elector

from pyngress.config import CompileOptions
from pyngress.config.streams import StreamOptions
from pyngress.model import Snapshot
from pyngress.sources.kubernetes import KubeClient
from pyngress.sources.kubernetes.election import LeaderElector
from pyngress.sources.kubernetes.replicas import last_replica
from pyngress.sources.kubernetes.service_status import ServiceStatus
from pyngress.sources.kubernetes.status import StatusPublisher

ADDRESS = "203.0.113.5"
log = logging.getLogger("test.lbstatus")


def _game() -> list[dict[str, Any]]:
    """Service default/game of type LoadBalancer with TCP port 1000 (pod port 9) and UDP port 1001."""
    docs = service_manifests("game", [9], service_port=1000, type_="LoadBalancer")
    docs[0]["spec"]["ports"].append({"name": "state", "port": 1001, "protocol": "UDP"})
    return docs


def _status_puts(api: Any, name: str) -> list[dict[str, Any]]:
    return [q for m, p, q in api.requests if m == "PUT" and p.endswith(f"/services/{name}/status")]


def _service_status(api: Any, name: str) -> Any:
    return next(o for (k, _, n), o in api.objects.items() if k.kind == "Service" and n == name).get("status")


@contextlib.asynccontextmanager
async def replica(client: KubeClient, e: LeaderElector | None, options: CompileOptions, *,
                  serve: bool = True) -> AsyncIterator[tuple[StatusPublisher, ServiceStatus, Any]]:
    """A source, (a proxy whose stream listeners follow it,) and a publisher with LoadBalancer status."""
    async with running_proxy(Snapshot(version=0)) as proxy:
        def apply(snapshot: Snapshot) -> None:
            if serve:
                proxy.server.install(snapshot)
            running.source.updated.set()

        async with running_source(client, apply, options=options) as running:
            listeners = proxy.server.streams.listeners if serve else {}
            services = ServiceStatus(client, running.source, lambda: listeners, log=log)
            publisher = StatusPublisher(client, running.source, e, addresses=[ADDRESS], resync=0.2,
                                        services=services, log=log)
            task = asyncio.create_task(publisher.run())
            try:
                yield publisher, services, proxy
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_leader_writes_bound_ports_once_follower_never_and_clears_when_no_longer_served() -> None:
    base = free_port()
    offset = base - 1000
    options = CompileOptions(streams=StreamOptions(serve_load_balancer_services=True, lb_port_offset=offset))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 1001 + offset))  # the UDP port cannot be bound: not advertised
        async with fake_cluster() as cluster, contextlib.AsyncExitStack() as exits:
            api = cluster.api
            for doc in _game():
                api.put_object(doc)
            a, _ = await exits.enter_async_context(elector(cluster.client, "a"))
            await asyncio.wait_for(a.leading.wait(), 5)
            _, leader, proxy = await exits.enter_async_context(replica(cluster.client, a, options))
            b, _ = await exits.enter_async_context(elector(cluster.client, "b"))
            # the follower serves nothing here (its ports are the leader's): were it to write, it would clear
            _, follower, _ = await exits.enter_async_context(replica(cluster.client, b, options, serve=False))
            await wait_until(lambda: len(_status_puts(api, "game")) >= 1, what="the Service status write")
            assert f"tcp/{1000 + offset}" in proxy.server.streams.listeners
            assert _service_status(api, "game")["loadBalancer"] == {
                "ingress": [{"ip": ADDRESS, "ports": [{"port": 1000, "protocol": "TCP"}]}]}
            await asyncio.sleep(0.8)  # four resyncs of both: nothing more to write
            assert len(_status_puts(api, "game")) == 1
            assert leader.writes == 1 and follower.writes == 0 and not b.is_leader

            game = next(o for (k, _, n), o in api.objects.items() if k.kind == "Service" and n == "game")
            api.put_object({**game, "spec": {**game["spec"], "type": "ClusterIP"}})  # no longer served
            await wait_until(lambda: len(_status_puts(api, "game")) >= 2, what="the status cleared")
            assert _service_status(api, "game")["loadBalancer"] == {}
            assert leader.writes == 2 and follower.writes == 0


async def test_service_status_conflict_is_retried() -> None:
    options = CompileOptions(streams=StreamOptions(serve_load_balancer_services=True,
                                                   lb_port_offset=free_port() - 1000))
    async with fake_cluster() as cluster:
        api = cluster.api
        for doc in _game()[:1]:
            doc["spec"]["ports"] = doc["spec"]["ports"][:1]
            api.put_object(doc)
        api.fail_next(1, 409, match=lambda r: r.method == "PUT" and r.path.endswith("/services/game/status"))
        async with replica(cluster.client, None, options) as (_, services, _):
            await wait_until(lambda: services.writes == 1, what="the write after the conflict")
            assert services.conflicts == 1 and len(_status_puts(api, "game")) == 2
            gets = [m for m, p, _ in api.requests if m == "GET" and p.endswith("/services/game")]
            assert len(gets) == 2  # read again after the conflict


async def test_last_replica_clears_status_on_shutdown_and_others_leave_it() -> None:
    offset = free_port() - 1000
    options = CompileOptions(streams=StreamOptions(serve_load_balancer_services=True, lb_port_offset=offset))
    async with fake_cluster() as cluster:
        api = cluster.api
        api.put_object(ingress_class())
        api.put_object(ingress("web", "a.example.com", "web"))
        doc = _game()[0]
        doc["spec"]["ports"] = doc["spec"]["ports"][:1]
        api.put_object(doc)
        async with replica(cluster.client, None, options) as (publisher, services, _):
            web = lambda: next(o for (k, _, n), o in api.objects.items()  # noqa: E731
                               if k.kind == "Ingress" and n == "web").get("status") or {}
            await wait_until(lambda: ADDRESS in str(web()) and services.writes == 1, what="status written")
            await wait_until(lambda: publisher.source.stores["Service"].entries["default/game"].status
                             is not None, what="the status cached")

            async def others_run() -> bool:
                return False

            await publisher.shutdown(others_run)
            assert ADDRESS in str(web()) and services.writes == 1  # another Pod runs: left in place

            async def alone() -> bool:
                return True

            await publisher.shutdown(alone)
            assert web()["loadBalancer"] == {"ingress": []}
            assert _service_status(api, "game")["loadBalancer"] == {}


async def test_last_replica_is_told_by_the_pods_sharing_our_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    def pod(name: str, app: str, revision: str = "5b8c4d") -> dict[str, Any]:
        labels = {"app": app, "tier": "edge", "pod-template-hash": revision}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ingress",
                                                                "labels": labels}}

    async with fake_cluster() as cluster:
        cluster.api.put_object(pod("pyngress-1", "pyngress"))
        cluster.api.put_object(pod("other-app", "other"))
        monkeypatch.setenv("POD_NAMESPACE", "ingress")
        monkeypatch.setenv("POD_NAME", "pyngress-1")
        assert await last_replica(cluster.client, log)
        leaving = pod("pyngress-0", "pyngress")
        leaving["metadata"]["deletionTimestamp"] = "2026-11-29T10:00:00Z"
        cluster.api.put_object(leaving)  # terminating as well (scale to zero): does not keep the status
        assert await last_replica(cluster.client, log)
        cluster.api.put_object(pod("pyngress-2", "pyngress", revision="9f7e6d"))  # a rolling update's new Pod
        assert not await last_replica(cluster.client, log)
        monkeypatch.delenv("POD_NAME")
        assert await last_replica(cluster.client, log)  # outside a cluster: the only one


async def test_the_published_service_gives_the_address_and_is_never_written() -> None:
    """Our own Service (type LoadBalancer, --publish-service) is served like the others but its status is the
    cloud's: the address it shows is written on the other Services, never on itself."""
    options = CompileOptions(streams=StreamOptions(serve_load_balancer_services=True))
    game_port, own_port = free_port(), free_port()
    async with fake_cluster() as cluster:
        api = cluster.api
        api.put_object(service_manifests("game", [9], service_port=game_port, type_="LoadBalancer")[0])
        own = service_manifests("pyngress", [9], service_port=own_port, type_="LoadBalancer")[0]
        api.put_object({**own, "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}})
        async with running_proxy(Snapshot(version=0)) as proxy, running_source(
                cluster.client, proxy.server.install, options=options) as running:
            services = ServiceStatus(cluster.client, running.source, lambda: proxy.server.streams.listeners,
                                     exclude="default/pyngress", log=log)
            publisher = StatusPublisher(cluster.client, running.source, None, publish_service="default/pyngress",
                                        services=services, log=log)
            await wait_until(running.source.synced.is_set, what="synced")
            assert f"tcp/{own_port}" in proxy.server.streams.listeners  # served like any other
            await publisher.sync()
            assert _service_status(api, "game")["loadBalancer"]["ingress"][0]["ip"] == "198.51.100.7"
            assert _status_puts(api, "pyngress") == [] and services.writes == 1
