"""HTTP/2 from clients (h2c with prior knowledge here; TLS with ALPN in test_h2_tls.py): streams as exchanges."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import h2.settings
from h2client import H2Client
from harness import (
    EchoBackend,
    async_test,
    build_request,
    pattern,
    refused_port,
    route,
    running_proxy,
    service,
    sha256,
    snapshot,
    stack,
    wait_until,
)

from pyngress.model import Endpoint, ProxySettings
from pyngress.runtime.h2 import H2Downstream


@async_test
async def test_hundred_concurrent_streams_on_one_connection_spread_over_the_pods() -> None:
    async with stack(pods=4) as s, await H2Client.connect(s.proxy.port) as client:
        ids = [client.start("GET", f"/item/{i}?q={i}") for i in range(100)]
        responses = await asyncio.gather(*(client.response(i) for i in ids))
        assert [r.status for r in responses] == [200] * 100
        pods = Counter(json.loads(r.body)["pod"] for r in responses)
        assert pods == {"pod-0": 25, "pod-1": 25, "pod-2": 25, "pod-3": 25}
        paths = sorted(json.loads(r.body)["path"] for r in responses)
        assert paths == sorted(f"/item/{i}?q={i}" for i in range(100))
        assert sum(b.connections for b in s.backends) >= 4  # several upstream connections, not one
        assert isinstance(next(iter(s.proxy.server.sessions)), H2Downstream)


@async_test
async def test_pseudo_headers_become_host_and_target_and_hop_by_hop_fields_stay_out() -> None:
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        resp = await client.request("GET", "/a/b?x=1", host="shop.example.com", headers=[
            ("te", "trailers"), ("cookie", "a=1"), ("cookie", "b=2"), ("x-custom", "yes")])
        assert resp.status == 200
        assert resp.header(b"connection") is None and resp.header(b"keep-alive") is None
        req = s.backend.requests[-1]
        assert (req.method, req.target, req.version) == ("GET", "/a/b?x=1", "HTTP/1.1")
        assert req.header("host") == "shop.example.com"
        assert req.header("cookie") == "a=1; b=2"  # RFC 9113 8.2.3: one field towards HTTP/1.1
        assert req.header("x-custom") == "yes"
        assert req.header("te") is None
        assert req.header("x-forwarded-host") == "shop.example.com"
        assert req.header("x-forwarded-for") == "127.0.0.1"
        assert [n.lower() for n, _ in req.headers].count("host") == 1


@async_test
async def test_request_and_response_bodies_stream_both_ways_intact() -> None:
    upload = pattern(3 * 1024 * 1024 + 7)
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        resp = await client.request("POST", "/upload", body=upload)  # no content-length: sent chunked upstream
        assert resp.status == 200
        echoed = json.loads(resp.body)
        assert (echoed["body_bytes"], echoed["body_sha256"]) == (len(upload), sha256(upload))
        assert s.backend.requests[-1].header("transfer-encoding") == "chunked"
        sized = await client.request("PUT", "/sized", body=upload[:100_000],
                                     headers=[("content-length", "100000")])
        assert json.loads(sized.body)["body_bytes"] == 100_000
        assert s.backend.requests[-1].header("content-length") == "100000"
        for path in ("/bytes/5000000", "/chunked/3000000"):
            down = await client.request("GET", path)
            assert down.status == 200
            assert sha256(bytes(down.body)) == down.header(b"x-body-sha256").decode()  # type: ignore[union-attr]


@async_test
async def test_response_waits_for_the_clients_window_and_pauses_the_upstream() -> None:
    size = 32 * 1024 * 1024
    async with stack() as s, await H2Client.connect(s.proxy.port, hold_window=True) as client:
        stream = client.start("GET", f"/bytes/{size}")
        await wait_until(lambda: len(client.responses[stream].body) >= 65535, what="first window")
        await asyncio.sleep(0.3)  # give a proxy that ignored the window time to send more (it must not)
        assert len(client.responses[stream].body) == 65535  # the initial stream window, not a byte more
        sent = s.backend.sent_body_bytes
        assert sent < size // 2, sent  # the upstream is paused: socket buffers hold the rest, not memory
        client.release()
        resp = await client.response(stream, timeout=30)
        assert len(resp.body) == size and sha256(bytes(resp.body)) == sha256(pattern(size))


@async_test
async def test_slow_upstream_holds_back_the_clients_request_window() -> None:
    body = pattern(2 * 1024 * 1024)
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        stream = client.start("POST", "/upload", end=False)
        await client.send_body(stream, body)
        resp = await client.response(stream)
        assert json.loads(resp.body)["body_sha256"] == sha256(body)
        assert s.backend.requests[-1].body == body


@async_test
async def test_max_concurrent_streams_is_announced_and_enforced_per_configmap() -> None:
    settings = ProxySettings(http2_max_concurrent_streams=8)
    async with stack(settings=settings) as s, await H2Client.connect(s.proxy.port) as client:
        assert client.conn.remote_settings.max_concurrent_streams == 8
        ids = [client.start("GET", "/delay/0.3") for _ in range(8)]
        # a client that ignores the limit: its extra stream is refused, the others go on
        client.conn.remote_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        extra = client.start("GET", "/one-too-many")
        assert (await client.response(extra)).reset == 7  # REFUSED_STREAM
        assert all(r.status == 200 for r in await asyncio.gather(*(client.response(i) for i in ids)))
        assert (await client.request("GET", "/after")).status == 200  # the connection lives on
        assert "/one-too-many" not in [r.target for r in s.backend.requests]
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        assert client.conn.remote_settings.max_concurrent_streams == 128


@async_test
async def test_drain_sends_goaway_and_finishes_the_streams_in_flight() -> None:
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        assert (await client.request("GET", "/warm")).status == 200
        slow = client.start("GET", "/delay/0.5")
        await s.backend.wait_requests(2)
        drain = asyncio.create_task(s.proxy.server.drain(5.0))
        await wait_until(lambda: client.goaway is not None, what="GOAWAY")
        assert client.goaway is not None
        assert (client.goaway.error_code, client.goaway.last_stream_id) == (0, slow)
        resp = await client.response(slow)
        assert resp.status == 200 and json.loads(resp.body)["path"] == "/delay/0.5"
        await asyncio.wait_for(client.closed.wait(), 5)
        await asyncio.wait_for(drain, 5)


@async_test
async def test_errors_map_to_the_same_statuses_as_http1() -> None:
    with refused_port() as dead:
        async with contextlib.AsyncExitStack() as exits:
            pod = await EchoBackend.start("pod")
            exits.push_async_callback(pod.close)
            host = "example.com"
            routes = [route(service("ok", [pod]), "/", host=host), route(service("none", []), "/none", host=host),
                      route(service("dead", [Endpoint("127.0.0.1", dead)]), "/dead", host=host)]
            s = await exits.enter_async_context(running_proxy(snapshot(routes, settings=ProxySettings(
                proxy_read_timeout=0.3))))
            client = await exits.enter_async_context(await H2Client.connect(s.port))
            assert (await client.request("GET", "/ok")).status == 200
            assert (await client.request("GET", "/ok", host="other.test")).status == 404
            assert (await client.request("GET", "/none")).status == 503
            assert (await client.request("GET", "/dead")).status == 502
            assert (await client.request("GET", "/delay/2")).status == 504
            head = await client.request("HEAD", "/none")
            assert (head.status, head.body) == (503, b"")


@async_test
async def test_upstream_dying_mid_body_resets_only_that_stream() -> None:
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        resp = await client.request("GET", "/abort/100000")
        assert resp.reset == 2  # INTERNAL_ERROR: never a complete-looking body
        assert (await client.request("GET", "/after")).status == 200  # the connection lives on


@async_test
async def test_upgrade_h2c_from_http1_is_never_forwarded() -> None:
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("GET", "/up", [("Connection", "Upgrade, HTTP2-Settings"),
                                                  ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")]))
        resp = await c.response()
        assert resp.status == 200 and resp.version == "HTTP/1.1"
        req = s.backend.requests[-1]
        assert req.header("upgrade") is None and req.header("http2-settings") is None
        assert "upgrade" not in (req.header("connection") or "").lower()
        # also without listing HTTP2-Settings in Connection
        async with await s.proxy.client() as c2:
            await c2.send(build_request("GET", "/up2", [("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABk")]))
            assert (await c2.response()).status == 200
        req = s.backend.requests[-1]
        assert req.header("upgrade") is None and req.header("http2-settings") is None


@async_test
async def test_http1_still_served_next_to_h2c_on_the_same_port() -> None:
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        assert (await client.request("GET", "/h2")).status == 200
        assert (await s.proxy.get("/h1")).status == 200


@async_test
async def test_streams_opened_after_goaway_are_refused_and_idle_connections_get_goaway() -> None:
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        slow = client.start("GET", "/delay/0.5")
        await s.backend.wait_requests(1)
        drain = asyncio.create_task(s.proxy.server.drain(5.0))
        await wait_until(lambda: client.goaway is not None, what="GOAWAY")
        late = client.start("GET", "/late")  # the client has not seen it yet: as if it crossed the GOAWAY
        assert (await client.response(late)).reset == 7  # REFUSED_STREAM: safe to retry elsewhere
        assert (await client.response(slow)).status == 200
        await asyncio.wait_for(drain, 5)
        assert len(s.backend.requests) == 1
    settings = ProxySettings(keep_alive=0.3)
    async with stack(settings=settings) as s, await H2Client.connect(s.proxy.port) as client:
        assert (await client.request("GET", "/once")).status == 200
        await asyncio.wait_for(client.closed.wait(), 5)  # idle past keep-alive: GOAWAY, then closed
        assert client.goaway is not None and client.goaway.error_code == 0
        assert not s.proxy.server.sessions


@async_test
async def test_h2c_preface_split_over_two_reads_is_still_recognised() -> None:
    import h2.config
    import h2.connection
    import h2.events

    async with stack() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.proxy.port)
        try:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
            conn.initiate_connection()
            conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.test"),
                                  (b":path", b"/split")], end_stream=True)
            data = conn.data_to_send()
            writer.write(data[:10])  # "PRI * HTTP": llhttp sees a partial request line
            await writer.drain()
            await wait_until(lambda: any(c.head_started >= 0 for c in s.proxy.server.connections),
                             what="the partial preface read")
            writer.write(data[10:])
            status = None
            while status is None:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                assert chunk, "connection closed"
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers or [])[b":status"]
                writer.write(conn.data_to_send())
            assert status == b"200" and s.backend.requests[-1].target == "/split"
        finally:
            writer.close()
            await writer.wait_closed()


@async_test
async def test_each_stream_uses_the_configuration_of_its_arrival_across_a_reload() -> None:
    async with contextlib.AsyncExitStack() as exits:
        old, new = await EchoBackend.start("old"), await EchoBackend.start("new")
        exits.push_async_callback(old.close)
        exits.push_async_callback(new.close)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("svc", [old]))])))
        client = await exits.enter_async_context(await H2Client.connect(proxy.port))
        slow = client.start("GET", "/delay/0.4")
        await old.wait_requests(1)
        proxy.server.install(snapshot([route(service("svc", [new]))], version=2))
        after = await asyncio.gather(*(client.request("GET", f"/after/{i}") for i in range(5)))
        assert {json.loads(r.body)["pod"] for r in after} == {"new"}
        assert json.loads((await client.response(slow)).body)["pod"] == "old"  # in flight: finished on old
        assert len(proxy.server.sessions) == 1  # the same client connection throughout


@async_test
async def test_keep_alive_requests_ends_an_http2_connection_with_goaway() -> None:
    async with stack(settings=ProxySettings(keep_alive_requests=3)) as s, \
            await H2Client.connect(s.proxy.port) as client:
        statuses = [(await client.request("GET", f"/n/{i}")).status for i in range(3)]
        assert statuses == [200, 200, 200]
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.goaway is not None and (client.goaway.error_code, client.goaway.last_stream_id) == (0, 5)
