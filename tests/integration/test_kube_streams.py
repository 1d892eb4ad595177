"""Cluster mode and layer 4 (issues 6 and 9): the tcp/udp services ConfigMaps are watched by name, and a
kubectl change to them opens or closes a listener that relays traffic to the Service's pods."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

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


@needs_kubectl
async def test_run_kubernetes_serves_tcp_services_and_load_balancer_services_with_status() -> None:
    """The real process with the ClusterRole of deploy/: a tcp-services entry and a LoadBalancer Service both
    relay, the Service gets our address in its status, and the last replica clears it on SIGTERM."""
    from test_kube_cli import _cluster_role_rules

    pod = await TcpPod.start("db-0")
    try:
        async with fake_cluster() as cluster:
            k = cluster.kubectl
            cm_port, offset = free_port(), free_port() - 1000
            await k.apply(*service_manifests("db", [pod.port]),
                          *service_manifests("game", [pod.port], service_port=1000, type_="LoadBalancer"),
                          configmap("tcp-services", {str(cm_port): "default/db:5000"}))
            cluster.api.rbac = _cluster_role_rules()
            controller = cluster.api.kubeconfig(str(cluster.tmp / "controller"), subject=True)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyngress", "run", "--kubernetes", "--kubeconfig", controller,
                "--http-port", "0", "--https-port", "0", "--address", "127.0.0.1", "--shutdown-grace", "1",
                "--tcp-services-configmap", "ingress/tcp-services", "--serve-load-balancer-services",
                "--lb-port-offset", str(offset), "--publish-status-address", "203.0.113.5",
                "--election-namespace", "default",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                for port in (cm_port, 1000 + offset):
                    await _eventually_echoes(port)
                want = '{"ingress":[{"ip":"203.0.113.5","ports":[{"port":1000,"protocol":"TCP"}]}]}'
                await _eventually(lambda: k("get", "service", "game", "-o", "jsonpath={.status.loadBalancer}"),
                                  want)
            finally:
                proc.send_signal(signal.SIGTERM)
                output, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, output.decode()
            assert cluster.api.denied == [], cluster.api.denied
            assert "203.0.113.5" not in await k("get", "service", "game", "-o", "jsonpath={.status}")
    finally:
        await pod.close()


async def _eventually_echoes(port: int, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(OSError, TimeoutError):
            if await tcp_round_trip(port, b"ping") == b"ping":
                return
        assert loop.time() < deadline, f"port {port} does not relay"
        await asyncio.sleep(0.05)


async def _eventually(read: Any, want: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := (await read()).strip()) != want:
        assert loop.time() < deadline, f"got {got!r}, want {want!r}"
        await asyncio.sleep(0.1)
