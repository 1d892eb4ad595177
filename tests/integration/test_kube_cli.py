"""`pyngress run --kubernetes` as a real process against the test API server: it serves what kubectl puts in
the cluster (HTTPS with a certificate from a cluster Secret too), follows changes, writes Ingress status as the
elected leader, and stops cleanly on SIGTERM, all
with only the permissions of the ClusterRole in deploy/ (the fake enforces it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import trustme
import yaml
from harness import EchoBackend, RawClient
from kube_support import (
    endpoint_slice,
    fake_cluster,
    ingress,
    ingress_class,
    needs_kubectl,
    service,
    tls_secret,
    with_tls,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_role_rules() -> list[dict[str, Any]]:
    manifest = Path(__file__).parents[2] / "deploy" / "kubernetes" / "pyngress.yaml"
    role = next(d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] == "ClusterRole")
    return list(role["rules"])


async def _https_eventually(port: int, host: str, ca: trustme.CA, timeout: float = 10.0) -> None:
    """Until an HTTPS request for `host` verifies against `ca` (the Secret's certificate) and gets a 200."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(OSError, ssl.SSLError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=host)
            try:
                writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                if (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200"):
                    return
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
        assert loop.time() < deadline, f"no verified HTTPS answer for {host}"
        await asyncio.sleep(0.05)


async def _status(port: int, host: str) -> int:
    with contextlib.suppress(OSError):
        async with await RawClient.connect(port) as c:
            return (await c.request("GET", "/", host=host)).status
    return 0


async def _eventually(port: int, host: str, status: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await _status(port, host)) != status:
        assert loop.time() < deadline, f"{host}: {got}, expected {status}"
        await asyncio.sleep(0.05)


@needs_kubectl
async def test_run_kubernetes_serves_and_follows_kubectl() -> None:
    pod = await EchoBackend.start("pod-a")
    try:
        async with fake_cluster() as cluster:
            k = cluster.kubectl
            await k.apply(ingress_class(), service("web"), endpoint_slice("web-a", "web", [pod]),
                          ingress("web", "a.example.com", "web"))
            # the controller runs as a subject bound to the ClusterRole shipped in deploy/: least privilege
            # must be enough for everything it does (lists, watches, the Lease, status writes)
            cluster.api.rbac = _cluster_role_rules()
            controller = cluster.api.kubeconfig(str(cluster.tmp / "controller"), subject=True)
            port, https_port = _free_port(), _free_port()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyngress", "run", "--kubernetes", "--kubeconfig", controller,
                "--http-port", str(port), "--https-port", str(https_port), "--address", "127.0.0.1",
                "--shutdown-grace", "2", "--shutdown-grace-period", "0",
                "--publish-status-address", "203.0.113.5", "--election-namespace", "default",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                await _eventually(port, "a.example.com", 200)
                await k.apply(ingress("web", "b.example.com", "web"))
                await _eventually(port, "b.example.com", 200)
                await _eventually(port, "a.example.com", 404)
                proc.send_signal(signal.SIGHUP)  # recompiles from the caches; must not stop the process
                await k("delete", "endpointslice", "web-a")
                await _eventually(port, "b.example.com", 503)
                assert proc.returncode is None
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while "203.0.113.5" not in await k("get", "ingress", "web", "-o", "jsonpath={.status}"):
                    assert loop.time() < deadline, "status not written"
                    await asyncio.sleep(0.05)
                holder = await k("get", "lease", "pyngress-leader", "-o", "jsonpath={.spec.holderIdentity}")
                assert holder.endswith(f"_{proc.pid}")
                # a TLS Secret and an Ingress tls entry from the cluster: the HTTPS listener presents it
                ca = trustme.CA()
                web = with_tls(ingress("web", "b.example.com", "web"), "b-tls")
                secret = tls_secret("b-tls", ca.issue_cert("b.example.com"))
                await k.apply(secret, web, endpoint_slice("web-a", "web", [pod]))
                await _https_eventually(https_port, "b.example.com", ca)
                assert await _status(port, "b.example.com") == 308  # ssl-redirect, as ingress-nginx
                assert cluster.api.denied == []
            finally:
                proc.send_signal(signal.SIGTERM)
                output, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, output.decode()
            assert cluster.api.denied == []  # the Lease release on shutdown was allowed too
            assert b"configuration version" in output
            # the stopped leader released its Lease for the next replica
            holder = await k("get", "lease", "pyngress-leader", "-o", "jsonpath={.spec.holderIdentity}")
            assert holder == ""
            # the last replica (no POD_NAME: the only one) removed its address (--update-status-on-shutdown)
            assert "203.0.113.5" not in await k("get", "ingress", "web", "-o", "jsonpath={.status}")
    finally:
        await pod.close()


def test_run_kubernetes_without_credentials_exits_1(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config either
    result = subprocess.run([sys.executable, "-m", "pyngress", "run", "--kubernetes", "--http-port", "0"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and "cannot configure the Kubernetes client" in result.stderr


def test_files_and_kubernetes_are_exclusive(tmp_path: Path) -> None:
    for args in (["--kubernetes", "-f", str(tmp_path)], []):
        result = subprocess.run([sys.executable, "-m", "pyngress", "run", *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and "give manifests with -f/--filename, or --kubernetes" in result.stderr


async def test_check_kubernetes_prints_what_the_cluster_would_serve() -> None:
    async with fake_cluster() as cluster:
        api = cluster.api
        api.put_object(ingress_class())
        api.put_object(service("web"))
        api.put_object(ingress("web", "a.example.com", "web"))
        api.put_object(ingress("broken", "b.example.com", "missing"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyngress", "check", "--kubernetes", "--kubeconfig", cluster.kubeconfig,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 1, err.decode()  # the broken Ingress is an error
        assert "a.example.com" in text and "default/web" in text
        assert "Ingress default/broken" in text and "Service default/missing not found" in text
