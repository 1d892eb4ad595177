"""TLS test support: certificates made by trustme, manifests compiled by the real config code, a proxy with both
an HTTP and an HTTPS listener, TLS clients that report which certificate the server showed, TLS echo pods."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from harness import EchoBackend, RawClient

from pyngress.config import CompileOptions, compile_snapshot, parse_manifest
from pyngress.model import KubeObject, Snapshot
from pyngress.runtime.https_listener import listen_https
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.tls_contexts import TLSContexts, fake_certificate

CA = trustme.CA()  # the "public" CA of the certificates pyngress serves
POD_CA = trustme.CA()  # the CA of the pods' own certificates (backend TLS, passthrough)
FAKE = fake_certificate(time.time())  # generated once for the whole test run: EC keys are cheap, not free


def der(leaf: trustme.LeafCert) -> bytes:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(Encoding.DER)


def secret(name: str, leaf: trustme.LeafCert | None = None, *, ca: trustme.CA | None = None,
           key: bytes | None = None) -> dict[str, Any]:
    data: dict[str, bytes] = {}
    if leaf is not None:
        data["tls.crt"] = leaf.cert_chain_pems[0].bytes()
        data["tls.key"] = key if key is not None else leaf.private_key_pem.bytes()
    if ca is not None:
        data["ca.crt"] = ca.cert_pem.bytes()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "default"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def app(name: str, hosts: Sequence[str], port: int, *, tls: Sequence[tuple[Sequence[str], str]] = (),
        annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A Service `name` with one endpoint 127.0.0.1:`port`, and an Ingress routing `hosts` to it."""
    backend = {"service": {"name": name, "port": {"name": "http"}}}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
         "ports": [{"name": "http", "port": port}],
         "endpoints": [{"addresses": ["127.0.0.1"], "targetRef": {"kind": "Pod", "name": f"{name}-pod"}}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
         "spec": {"ingressClassName": "pyngress",
                  "rules": [{"host": h, "http": {"paths": [
                      {"path": "/", "pathType": "Prefix", "backend": backend}]}} for h in hosts],
                  "tls": [{"hosts": list(h), "secretName": s} for h, s in tls]}},
    ]


def configmap(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pyngress", "namespace": "default"},
            "data": data}


def compile_docs(docs: Sequence[dict[str, Any]], *, version: int = 1, **options: Any) -> Snapshot:
    objects: list[KubeObject] = []
    for doc in docs:
        obj, problems = parse_manifest(doc, "test.yaml")
        assert not [p for p in problems if p.severity == "error"], problems
        if obj is not None:
            objects.append(obj)
    return compile_snapshot(objects, CompileOptions(**options), version=version, now=time.time())


@dataclass
class TLSProxy:
    server: ProxyServer
    http_port: int
    https_port: int

    async def plain(self) -> RawClient:
        return await RawClient.connect(self.http_port)

    async def tls(self, server_name: str | None, **kwargs: Any) -> TLSClient:
        return await TLSClient.connect(self.https_port, server_name, **kwargs)


@contextlib.asynccontextmanager
async def tls_proxy(snap: Snapshot, *, redirect_port: int = 0) -> AsyncIterator[TLSProxy]:
    server = ProxyServer(snap, rng=random.Random(0))
    http_port = await server.listen("127.0.0.1", 0)
    try:
        https_port = await listen_https(server, "127.0.0.1", 0, contexts=TLSContexts(*FAKE),
                                        redirect_port=redirect_port)
        yield TLSProxy(server, http_port, https_port)
    finally:
        await server.drain(1.0)


class TLSClient(RawClient):
    """A RawClient over TLS that does not verify (so it can see any certificate) and remembers the server's."""

    peer_der: bytes = b""
    alpn: str | None = None

    @classmethod
    async def connect(cls, port: int, server_name: str | None = None, *,  # type: ignore[override]
                      alpn: Sequence[str] = ("http/1.1",), ctx: ssl.SSLContext | None = None) -> TLSClient:
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(list(alpn))
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname=server_name or "", limit=1 << 20), 5.0)
        client = cls(reader, writer)
        ssl_object = writer.get_extra_info("ssl_object")
        client.peer_der = ssl_object.getpeercert(binary_form=True)
        client.alpn = ssl_object.selected_alpn_protocol()
        return client

    @property
    def peer_cn(self) -> str:
        cert = x509.load_der_x509_certificate(self.peer_der)
        return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def tls_echo(name: str, leaf: trustme.LeafCert) -> EchoBackend:
    """An EchoBackend that speaks TLS with `leaf` (a pod with its own certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    backend = EchoBackend(name)
    backend._server = await asyncio.start_server(backend._serve, "127.0.0.1", 0, ssl=ctx, limit=1 << 20)
    backend.port = backend._server.sockets[0].getsockname()[1]
    return backend
