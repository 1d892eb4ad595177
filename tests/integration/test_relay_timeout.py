"""ssl-passthrough relays: idle both ways for proxy-stream-timeout -> closed by the server's ticker; a relay
that keeps moving bytes is not."""

from __future__ import annotations

import asyncio
import ssl

from harness import async_test
from tls_harness import POD_CA, TLSClient, app, compile_docs, configmap, tls_echo, tls_proxy

from pyngress.model import ProxySettings

PASS_LEAF = POD_CA.issue_cert("secure.example.com")
TIMEOUT = 0.4


async def closed_within(client: TLSClient, limit: float) -> bool:
    try:
        return await asyncio.wait_for(client.reader.read(), limit) == b""
    except (ConnectionError, ssl.SSLError):
        return True


@async_test
async def test_idle_relay_is_closed_after_proxy_stream_timeout_and_a_busy_one_is_not() -> None:
    pod = await tls_echo("secure-pod", PASS_LEAF)
    try:
        docs = [configmap(**{"proxy-stream-timeout": f"{TIMEOUT}s"}),
                *app("secure", ["secure.example.com"], pod.port,
                     annotations={"nginx.ingress.kubernetes.io/ssl-passthrough": "true"})]
        async with tls_proxy(compile_docs(docs)) as proxy:
            loop = asyncio.get_running_loop()
            idle = await proxy.tls("secure.example.com")
            busy = await proxy.tls("secure.example.com")
            try:
                started = loop.time()
                for _ in range(int(3 * TIMEOUT / 0.1)):  # busy: a request every 0.1 s, past 3 timeouts
                    resp = await busy.request("GET", "/", host="secure.example.com")
                    assert resp.status == 200 and resp.json()["pod"] == "secure-pod"
                    await asyncio.sleep(0.1)
                assert loop.time() - started > 2 * TIMEOUT
                assert await closed_within(idle, 10.0)  # the idle one was cut meanwhile (or soon after)
                assert loop.time() - started >= TIMEOUT  # ... never before its timeout
                assert (await busy.request("GET", "/", host="secure.example.com")).status == 200
                deadline = loop.time() + 10.0
                while len(proxy.server.https.relays) > 1 and loop.time() < deadline:  # type: ignore[union-attr]
                    await asyncio.sleep(0.02)
                assert len(proxy.server.https.relays) == 1  # type: ignore[union-attr]
            finally:
                await idle.close()
                await busy.close()
    finally:
        await pod.close()


def test_default_stream_timeout_is_ten_minutes() -> None:
    assert ProxySettings().proxy_stream_timeout == 600.0
