"""Cluster mode and layer 4 (issues 6 and 9): the tcp/udp services ConfigMaps are watched by name, and a
kubectl change to them opens or closes a listener that relays traffic to the Service's pods."""

from __future__ import annotations

import contextlib

from harness import wait_until
from kube_support import fake_cluster, needs_kubectl, source_and_proxy
from l4_harness import TcpPod, configmap, free_port, service_manifests, tcp_round_trip

from pyngress.config import CompileOptions
from pyngress.config.streams import StreamOptions

STREAMS = StreamOptions(tcp_services_configmap="ingress/tcp-services",
                        udp_services_configmap="ingress/udp-services")


@needs_kubectl
async def test_tcp_services_configmap_entries_open_and_close_listeners() -> None:
    async with contextlib.AsyncExitStack() as exits:
        pods = [await TcpPod.start(f"db-{i}") for i in range(2)]
        for pod in pods:
            exits.push_async_callback(pod.close)
        cluster = await exits.enter_async_context(fake_cluster())
        k = cluster.kubectl
        await k.apply(*service_manifests("db", [p.port for p in pods]),
                      configmap("unrelated", {"1": "x"}))  # another ConfigMap: not watched, not read
        running, proxy = await exits.enter_async_context(
            source_and_proxy(cluster.client, options=CompileOptions(streams=STREAMS)))
        source, server = running.source, proxy.server
        await wait_until(source.synced.is_set, what="synced")
        assert server.streams.listeners == {}
        listen = free_port()
        await k.apply(configmap("tcp-services", {str(listen): "default/db:5000"}))
        await wait_until(lambda: f"tcp/{listen}" in server.streams.listeners, what="the listener")
        await server.streams.settled()
        answers = [await tcp_round_trip(listen, b"hello %d" % i) for i in range(4)]
        assert answers == [b"hello %d" % i for i in range(4)]
        assert [p.connections for p in pods] == [2, 2]  # round robin over the two pods
        # only the named ConfigMaps are watched, each by a field selector on its name
        selectors = {q.get("fieldSelector") for m, p, q in cluster.api.requests
                     if m == "GET" and p.endswith("/configmaps")}  # the list and watch requests
        assert selectors == {f"metadata.name={n}" for n in ("pyngress", "tcp-services", "udp-services")}
        assert set(source.stores["ConfigMap ingress/tcp-services"].entries) == {"ingress/tcp-services"}
        assert "ConfigMap ingress/udp-services" in source.stores  # watched although it does not exist yet

        await k("delete", "configmap", "tcp-services", "-n", "ingress")
        await wait_until(lambda: f"tcp/{listen}" not in server.streams.listeners, what="the listener closed")
        with contextlib.suppress(ConnectionError, OSError):
            await tcp_round_trip(listen, b"gone")
            raise AssertionError("the port still accepts connections")
