"""Helpers for the cluster-mode tests: manifests as dicts, kubectl against the fake, a running source + proxy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from fake_apiserver import FakeApiServer
from harness import EchoBackend, running_proxy

from pyngress.config import CompileOptions
from pyngress.model import Snapshot
from pyngress.sources.kubernetes import KubeClient, KubernetesSource, WatchSettings, connect

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (CI installs it)")
FAST = WatchSettings(page_size=50, inactivity=5.0, backoff_base=0.02, backoff_cap=0.2)
CONTROLLER = "pyngress.io/ingress-controller"


def ingress_class(name: str = "pyngress", *, controller: str = CONTROLLER,
                  default: bool = False) -> dict[str, Any]:
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name, "annotations": annotations}, "spec": {"controller": controller}}


def service(name: str, *, port_name: str = "http", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": port_name, "port": 80}]}}


def endpoint_slice(name: str, svc: str, pods: Sequence[EchoBackend], *, ready: bool = True,
                   namespace: str = "default") -> dict[str, Any]:
    # one slice port per pod is impossible (a slice has one port list), so every pod of a test Service
    # listens on its own port and gets a slice of its own
    assert len({p.port for p in pods}) <= 1, "one port per slice"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": pods[0].port if pods else 1}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": p.name}} for p in pods]}


def ingress(name: str, host: str, svc: str, *, path: str = "/", cls: str | None = "pyngress",
            namespace: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": [
        {"path": path, "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"name": "http"}}}}]}}]}
    if cls is not None:
        spec["ingressClassName"] = cls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def tls_secret(name: str, cert: trustme.LeafCert, namespace: str = "default") -> dict[str, Any]:
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(chain).decode(),
                     "tls.key": base64.b64encode(cert.private_key_pem.bytes()).decode()}}


def with_tls(ingress_object: dict[str, Any], secret: str) -> dict[str, Any]:
    hosts = [rule["host"] for rule in ingress_object["spec"]["rules"]]
    ingress_object["spec"]["tls"] = [{"hosts": hosts, "secretName": secret}]
    return ingress_object


class Kubectl:
    def __init__(self, kubeconfig: str, cache: str) -> None:
        self.kubeconfig, self.cache = kubeconfig, cache

    async def __call__(self, *args: str, stdin: Any = None) -> str:
        assert KUBECTL is not None
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", self.cache, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        data = None if stdin is None else json.dumps({"apiVersion": "v1", "kind": "List", "items": stdin}
                                                     if isinstance(stdin, list) else stdin).encode()
        out, err = await asyncio.wait_for(proc.communicate(data), 30)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
        return out.decode()

    async def apply(self, *objects: dict[str, Any]) -> str:
        return await self("apply", "--validate=false", "-f", "-", stdin=list(objects))


@dataclass
class Cluster:
    api: FakeApiServer
    client: KubeClient
    kubeconfig: str
    kubectl: Kubectl
    tmp: Path


@contextlib.asynccontextmanager
async def fake_cluster(**kwargs: Any) -> AsyncIterator[Cluster]:
    with tempfile.TemporaryDirectory() as tmp:
        api = await FakeApiServer(**kwargs).start()
        kubeconfig = api.kubeconfig(f"{tmp}/kubeconfig")
        client = await connect(kubeconfig)  # kubernetes_asyncio reads the kubeconfig, as in production
        try:
            yield Cluster(api, client, kubeconfig, Kubectl(kubeconfig, f"{tmp}/cache"), Path(tmp))
        finally:
            await client.close()
            await api.close()


@dataclass
class Running:
    source: KubernetesSource
    applied: list[Snapshot]
    applied_at: list[float]  # loop time of each apply


@contextlib.asynccontextmanager
async def running_source(client: KubeClient, apply: Any = None, *, options: CompileOptions | None = None,
                         debounce: float = 0.05, settings: WatchSettings = FAST) -> AsyncIterator[Running]:
    applied: list[Snapshot] = []
    applied_at: list[float] = []

    def record(snapshot: Snapshot) -> None:
        applied.append(snapshot)
        applied_at.append(asyncio.get_running_loop().time())
        if apply is not None:
            apply(snapshot)

    source = KubernetesSource(client, options or CompileOptions(), record, debounce=debounce, settings=settings,
                              rng=random.Random(0), log=logging.getLogger("test.kube"))
    task = asyncio.create_task(source.run())
    try:
        yield Running(source, applied, applied_at)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def source_and_proxy(client: KubeClient, **kwargs: Any) -> AsyncIterator[tuple[Running, Any]]:
    async with running_proxy(Snapshot(version=0)) as proxy, running_source(
            client, lambda s: proxy.server.install(s), **kwargs) as running:
        yield running, proxy
