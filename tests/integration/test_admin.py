"""The admin listener: health, readiness, metrics, status, config (redacted), dashboard, loopback by default."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import pytest
from rich.console import Console
from tests.integration.harness import EchoBackend, RawClient, async_test, running_proxy, service, snapshot

from pyngress.model import AffinitySpec, PathType, ProxySettings, Route
from pyngress.observability.statuscli import show_status
from pyngress.observability.wiring import start_admin

SALT = "pepper-7f3a9c"


async def get(port: int, path: str) -> tuple[int, str, bytes]:
    async with await RawClient.connect(port) as c:
        r = await c.request("GET", path, host="admin")
        return r.status, r.header("content-type") or "", r.body


@async_test
async def test_admin_routes() -> None:
    pod = await EchoBackend.start("pod-a")
    svc = service("echo", [pod])
    affinity = AffinitySpec(kind="cookie", salt=SALT)
    routes = [Route("", "/", PathType.PREFIX, svc, "default/web", affinity=affinity)]
    snap = snapshot(routes, settings=ProxySettings(session_cookie_salt=SALT))
    try:
        async with running_proxy(snap) as proxy:
            admin = await start_admin(proxy.server, "127.0.0.1", 0)
            assert admin is not None
            try:
                async with await proxy.client() as c:
                    assert (await c.request("GET", "/")).status == 200
                assert (await get(admin.port, "/healthz"))[0] == 200
                assert (await get(admin.port, "/readyz"))[0] == 200
                code, ctype, body = await get(admin.port, "/metrics")
                assert code == 200 and ctype.startswith("text/plain")
                assert b'nginx_ingress_controller_requests{' in body and b'status="200"' in body
                code, ctype, body = await get(admin.port, "/status")
                doc = json.loads(body)
                assert code == 200 and ctype == "application/json"
                assert doc["config"]["generation"] == 1 and doc["routes"][0]["backend"] == svc.key
                assert [(e["endpoint"], e["requests"], e["health"]) for e in doc["endpoints"]] == [
                    (pod.endpoint.key, 1, "ready")]
                code, _, body = await get(admin.port, "/config")
                assert code == 200 and SALT.encode() not in body  # no key material
                config = json.loads(body)
                assert config["settings"]["session_cookie_salt"] == "[redacted]"
                assert config["routes"][0]["affinity"]["salt"] == "[redacted]"
                assert config["routes"][0]["backend"]["key"] == svc.key  # identities are not secrets
                code, ctype, body = await get(admin.port, "/")
                assert code == 200 and ctype.startswith("text/html") and b"<svg" not in body[:100]
                assert b"fetch(\"status\"" in body
                assert (await get(admin.port, "/nope"))[0] == 404
                out = io.StringIO()
                rc = await asyncio.to_thread(show_status, f"http://127.0.0.1:{admin.port}",
                                             console=Console(file=out, width=200))
                assert rc == 0
                text = out.getvalue()
                assert "configuration generation 1" in text and pod.endpoint.key in text and "100%" in text
                proxy.server.draining = True  # what SIGTERM sets: readiness must fail first
                assert (await get(admin.port, "/readyz"))[0] == 503
                proxy.server.draining = False
            finally:
                await admin.close()
    finally:
        await pod.close()


@async_test
async def test_admin_binds_loopback_only_by_default() -> None:
    from pyngress.runtime.app import RunOptions

    assert RunOptions(paths=(), compile=None).admin_host == "127.0.0.1"  # type: ignore[arg-type]
    async with running_proxy(snapshot([])) as proxy:
        admin = await start_admin(proxy.server, RunOptions.admin_host, 0)
        assert admin is not None and admin._server is not None
        try:
            assert [s.getsockname()[0] for s in admin._server.sockets] == ["127.0.0.1"]
            assert (await get(admin.port, "/healthz"))[0] == 200
            # another address of this host (127.0.0.2 is loopback too, but not the bound one): refused
            with pytest.raises(OSError):
                await asyncio.wait_for(asyncio.open_connection("127.0.0.2", admin.port), 5)
        finally:
            await admin.close()


def test_status_cli_reports_an_unreachable_admin() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        out = io.StringIO()
        assert show_status(f"http://127.0.0.1:{port}", console=Console(file=out, width=200)) == 1
    assert "cannot read" in out.getvalue()


@async_test
async def test_readyz_waits_for_a_source_to_sync() -> None:
    from pyngress.observability.wiring import synced_of

    class KubeLikeSource:  # the Kubernetes source's contract: an asyncio.Event set once caches are filled
        def __init__(self) -> None:
            self.synced = asyncio.Event()

    source = KubeLikeSource()
    assert synced_of(object())()  # a file source: ready once loaded
    async with running_proxy(snapshot([])) as proxy:
        admin = await start_admin(proxy.server, "127.0.0.1", 0, synced=synced_of(source))
        assert admin is not None
        try:
            assert (await get(admin.port, "/readyz"))[0] == 503
            assert (await get(admin.port, "/healthz"))[0] == 200  # alive all the same
            source.synced.set()
            assert (await get(admin.port, "/readyz"))[0] == 200
        finally:
            await admin.close()
