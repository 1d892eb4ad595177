"""Cluster mode and observability (issues 6 and 8): the admin listener of `pyngress run --kubernetes` is ready
once the caches are synced, and /metrics counts the watch's relists and events and the configurations."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys

from harness import EchoBackend, RawClient
from kube_support import endpoint_slice, fake_cluster, ingress, ingress_class, needs_kubectl, service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        async with await RawClient.connect(port) as c:
            r = await c.request("GET", path, host="admin")
            return r.status, r.body
    except OSError:
        return 0, b""


async def _until(port: int, path: str, status: int, timeout: float = 15.0) -> bytes:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await _get(port, path))[0] != status:
        assert loop.time() < deadline, f"{path}: {got[0]}, expected {status}"
        await asyncio.sleep(0.05)
    return got[1]


@needs_kubectl
async def test_cluster_mode_readiness_and_watch_metrics() -> None:
    pod = await EchoBackend.start("pod-a")
    try:
        async with fake_cluster() as cluster:
            await cluster.kubectl.apply(ingress_class(), service("web"), endpoint_slice("web-a", "web", [pod]),
                                        ingress("web", "a.example.com", "web"))
            port, https_port, admin = _free_port(), _free_port(), _free_port()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyngress", "run", "--kubernetes", "--kubeconfig", cluster.kubeconfig,
                "--http-port", str(port), "--https-port", str(https_port), "--address", "127.0.0.1",
                "--admin-port", str(admin), "--shutdown-grace", "2",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                await _until(admin, "/readyz", 200)  # the caches are synced and the first Snapshot applied
                status = json.loads(await _until(admin, "/status", 200))
                assert [r["host"] for r in status["routes"]] == ["a.example.com"]
                assert status["config"]["generation"] >= 1
                await cluster.kubectl.apply(ingress("web", "b.example.com", "web"))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 15
                while True:  # the change arrives as watch events and a new configuration
                    text = (await _until(admin, "/metrics", 200)).decode()
                    events = re.findall(r'^pyngress_kube_watch_events_total\{[^}]*resource="ingresses"[^}]*'
                                        r'type="(\w+)"[^}]*\} (\S+)', text, re.M)
                    if ("MODIFIED", "1.0") in events or ("ADDED", "1.0") in events:
                        break
                    assert loop.time() < deadline, events
                    await asyncio.sleep(0.05)
                assert re.search(r'^pyngress_kube_relists_total\{[^}]*resource="ingresses"[^}]*\} [1-9]', text,
                                 re.M)
                assert re.search(r"^nginx_ingress_controller_config_last_reload_successful\{[^}]*\} 1\.0$", text,
                                 re.M)
            finally:
                proc.send_signal(signal.SIGTERM)
                _, errors = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, errors.decode()
            assert b"admin listener on http://127.0.0.1:" in errors
    finally:
        await pod.close()
