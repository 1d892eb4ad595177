"""HTTP/2 streams in the metrics and the access log (issue 8): each stream is one request, counted and logged."""

from __future__ import annotations

import json
import os

from h2client import H2Client
from harness import async_test, stack

from pyngress.observability import prometheus
from pyngress.observability.accesslog import AccessLog
from pyngress.observability.export import merge
from pyngress.observability.workers import local_state


@async_test
async def test_streams_are_counted_and_logged_like_requests() -> None:
    read_end, write_end = os.pipe()
    log = AccessLog(fd=write_end)
    try:
        async with stack(pods=2) as s:
            s.proxy.server.recorder.set_sink(log)
            async with await H2Client.connect(s.proxy.port) as client:
                for path in ("/a", "/b", "/status/404", "/c"):
                    await client.request("GET", path, host="shop.test")
                assert (await client.request("POST", "/d", body=b"x" * 1000, host="shop.test")).status == 200
                open_now = prometheus.render(merge([local_state(s.proxy.server)])).decode()
                assert 'pyngress_connections_active{controller_class="pyngress",controller_namespace="",' \
                       in open_now
                [active] = [x for x in open_now.splitlines() if x.startswith("pyngress_connections_active{")]
                assert active.endswith(" 1.0")  # the HTTP/2 connection, while it is open
            text = prometheus.render(merge([local_state(s.proxy.server)])).decode()
        log.close()
        os.close(write_end)
        lines = [json.loads(x) for x in os.read(read_end, 1 << 20).splitlines()]
    finally:
        os.close(read_end)
    counts = {}
    for line in text.splitlines():
        if line.startswith("nginx_ingress_controller_requests{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="')[1].split('"')[0]
            method = labels.split('method="')[1].split('"')[0]
            counts[method, status] = float(value)
    assert counts == {("GET", "200"): 3.0, ("GET", "404"): 1.0, ("POST", "200"): 1.0}
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("GET", "/a", 200), ("GET", "/b", 200), ("GET", "/status/404", 404), ("GET", "/c", 200),
        ("POST", "/d", 200)]
    assert lines[-1]["request_length"] == 1000  # the body (HTTP/2 heads are not counted)
    assert all(x["bytes"] > 0 and x["upstream_addr"] for x in lines)
