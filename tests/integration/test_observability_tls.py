"""TLS and L4 in the metrics: handshakes by result and reason, HTTPS and TCP-stream connections per listener."""

from __future__ import annotations

import asyncio

from harness import EchoBackend, async_test, wait_until
from tls_harness import CA, app, compile_docs, secret, tls_proxy

from pyngress.observability import prometheus
from pyngress.observability.events import EVENTS
from pyngress.observability.export import merge
from pyngress.observability.workers import local_state

LEAF = CA.issue_cert("a.example.com")


@async_test
async def test_handshakes_and_failures_are_counted() -> None:
    pod = await EchoBackend.start("a")
    try:
        snap = compile_docs([secret("cert", LEAF), *app("a", ["a.example.com"], pod.port,
                                                        tls=[(["a.example.com"], "cert")])])
        ok, failed = EVENTS.tls_handshakes["ok",], EVENTS.tls_handshakes["failed",]
        reason = EVENTS.tls_failures["http_request",]
        async with tls_proxy(snap) as proxy:
            async with await proxy.tls("a.example.com") as client:
                assert (await client.request("GET", "/", host="a.example.com")).status == 200
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.https_port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")  # plain HTTP to the TLS port
            await reader.read()  # the server gives up on the handshake and closes
            writer.close()
            await wait_until(lambda: EVENTS.tls_handshakes["failed",] == failed + 1, what="a failed handshake")
            assert EVENTS.tls_handshakes["ok",] == ok + 1
            assert EVENTS.tls_failures["http_request",] == reason + 1  # OpenSSL's reason, lower case
            text = prometheus.render(merge([local_state(proxy.server)])).decode()
        assert 'pyngress_tls_handshakes_total{' in text and 'result="failed"' in text
        listener = f'listener="127.0.0.1:{proxy.https_port}"'
        [line] = [x for x in text.splitlines() if x.startswith("pyngress_connections_accepted_total")
                  and listener in x]
        assert line.endswith(" 2.0")  # both were accepted, though only one became an HTTP connection
    finally:
        await pod.close()


def test_config_of_a_tls_snapshot_has_no_key_material() -> None:
    import json

    from pyngress.observability.status import config_document

    snap = compile_docs([secret("cert", LEAF),
                         *app("a", ["a.example.com"], 8080, tls=[(["a.example.com"], "cert")])])
    [certificate] = snap.tls.certificates.values()
    text = json.dumps(config_document(snap))
    assert "BEGIN" not in text and "PRIVATE" not in text
    key_body = LEAF.private_key_pem.bytes().decode().splitlines()[1]  # a line of the base64 key itself
    assert key_body not in text
    assert certificate.fingerprint in text  # what identifies the certificate stays visible
    assert "a.example.com" in text


@async_test
async def test_l4_tcp_connections_are_counted_per_listener() -> None:
    from l4_harness import TcpPod, free_port, serving, tcp_entry, tcp_round_trip

    pod = await TcpPod.start("db-0")
    listen = free_port()
    key = f"tcp/{listen}"
    before = EVENTS.stream_accepted[key]
    try:
        async with serving(tcp_entry([pod.port], listen)) as server:
            for _ in range(3):
                assert await tcp_round_trip(listen, b"ping") == b"ping"
            text = prometheus.render(merge([local_state(server)])).decode()
    finally:
        await pod.close()
    assert EVENTS.stream_accepted[key] == before + 3
    [line] = [x for x in text.splitlines()
              if x.startswith("pyngress_connections_accepted_total") and f'listener="{key}"' in x]
    assert line.endswith(f" {before + 3}.0")
