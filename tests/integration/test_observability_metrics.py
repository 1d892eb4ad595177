"""Metrics and the access log after a known sequence of requests through a real proxy (issue 8)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.integration.harness import EchoBackend, async_test, route, running_proxy, service, snapshot

from pyngress.model import ProxySettings
from pyngress.observability import prometheus
from pyngress.observability.accesslog import AccessLog
from pyngress.observability.export import merge
from pyngress.observability.workers import local_state
from pyngress.runtime.server import ProxyServer

HOST = "shop.test"


def scrape(server: ProxyServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as {(sample name, labels): value}, parsed by prometheus-client's own parser."""
    text = prometheus.render(merge([local_state(server)])).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def pick(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def _sequence(port: int) -> dict[str, Any]:
    """4 GET 200, 1 GET 503 (from the backend), 1 POST 200 with a 100-byte body, 1 GET 404 (no rule)."""
    from tests.integration.harness import RawClient

    seen: dict[str, Any] = {"sizes": []}
    async with await RawClient.connect(port) as c:
        for _ in range(4):
            r = await c.request("GET", "/", host=HOST)
            assert r.status == 200
        assert (await c.request("GET", "/status/503", host=HOST)).status == 503
        assert (await c.request("POST", "/", body=b"x" * 100, host=HOST)).status == 200
        assert (await c.request("GET", "/", host="elsewhere.test")).status == 404
    return seen


@async_test
async def test_counts_by_status_and_histogram_counts_after_a_known_sequence() -> None:
    pods = [await EchoBackend.start("pod-a"), await EchoBackend.start("pod-b")]
    try:
        svc = service("echo", pods)
        async with running_proxy(snapshot([route(svc, host=HOST)])) as proxy:
            await _sequence(proxy.port)
            m = scrape(proxy.server)
    finally:
        for p in pods:
            await p.close()
    shop = {"host": HOST, "ingress": "ing-echo", "namespace": "default", "service": "echo", "path": "/"}
    requests = "nginx_ingress_controller_requests"
    assert pick(m, requests, **shop, method="GET", status="200") == 4
    assert pick(m, requests, **shop, method="GET", status="503") == 1
    assert pick(m, requests, **shop, method="POST", status="200") == 1
    assert pick(m, requests, ingress="", service="", method="GET", status="404") == 1
    assert pick(m, requests) == 7
    duration = "nginx_ingress_controller_request_duration_seconds"
    assert pick(m, duration + "_count", **shop, method="GET", status="200") == 4
    assert pick(m, duration + "_bucket", **shop, method="GET", status="200", le="+Inf") == 4
    assert pick(m, duration + "_count") == 7
    upstream = "nginx_ingress_controller_response_duration_seconds"
    assert pick(m, upstream + "_count") == 6  # the 404 never reached an upstream
    assert pick(m, upstream + "_count", status="404") == 0
    # request sizes: the POST's head and its 100-byte body; response sizes: what the client read
    post_size = pick(m, "nginx_ingress_controller_request_size_sum", method="POST")
    assert 100 + len(f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n") == post_size
    assert pick(m, "nginx_ingress_controller_request_size_bucket", method="POST", le="100.0") == 0
    assert pick(m, "nginx_ingress_controller_request_size_bucket", method="POST", le="1000.0") == 1
    assert pick(m, "nginx_ingress_controller_response_size_count") == 7
    assert pick(m, "nginx_ingress_controller_response_size_sum", status="404") > 0
    # per endpoint: 6 responses came from pods (round robin: GET, GET, GET, GET, 503, POST), the 404 none
    ok = pick(m, "pyngress_endpoint_responses_total", code="2xx")
    assert ok == 5 and pick(m, "pyngress_endpoint_responses_total", code="5xx") == 1
    per_pod = [pick(m, "pyngress_endpoint_responses_total", endpoint=p.endpoint.key) for p in pods]
    assert per_pod == [3, 3]
    assert pick(m, "pyngress_endpoint_inflight_requests") == 0
    assert pick(m, "pyngress_endpoint_up") == 2
    assert pick(m, "pyngress_connections_accepted_total") == 1
    assert pick(m, "nginx_ingress_controller_nginx_process_connections_total", state="accepted") == 1


def _lines(fd: int) -> Iterator[dict[str, Any]]:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    for line in data.splitlines():
        yield json.loads(line)


@async_test
async def test_access_log_lines_parse_as_json_with_every_field() -> None:
    read_end, write_end = os.pipe()
    log = AccessLog(fd=write_end)
    pod = await EchoBackend.start("pod-a")
    try:
        svc = service("echo", [pod])
        async with running_proxy(snapshot([route(svc, host=HOST)])) as proxy:
            proxy.server.recorder.set_sink(log)
            await _sequence(proxy.port)
        await pod.close()
        log.close()
        os.close(write_end)
        lines = list(_lines(read_end))
    finally:
        os.close(read_end)
    fields = ["time", "request_id", "client", "method", "host", "path", "status", "bytes", "request_length",
              "duration", "upstream_addr", "upstream_status", "upstream_duration", "namespace", "ingress",
              "service", "attempts"]
    assert [list(line) for line in lines] == [fields] * 7
    assert [line["status"] for line in lines] == [200, 200, 200, 200, 503, 200, 404]
    assert [line["method"] for line in lines] == ["GET"] * 5 + ["POST", "GET"]
    first, missing = lines[0], lines[-1]
    assert first["client"] == "127.0.0.1" and first["host"] == HOST and first["path"] == "/"
    assert first["upstream_addr"] == pod.endpoint.key and first["upstream_status"] == 200
    assert first["namespace"] == "default" and first["ingress"] == "ing-echo" and first["service"] == "echo"
    assert first["attempts"] == 1 and 0 < first["upstream_duration"] <= first["duration"] < 5
    assert first["bytes"] > 0 and first["time"].endswith("Z")
    # the request id logged is the one the backend received
    assert [line["request_id"] for line in lines[:6]] == [r.header("x-request-id") for r in pod.requests]
    assert missing["upstream_addr"] is None and missing["service"] is None and missing["attempts"] == 0
    assert lines[4]["path"] == "/status/503"


@async_test
async def test_enable_access_log_false_writes_nothing() -> None:
    read_end, write_end = os.pipe()
    log = AccessLog(fd=write_end)
    pod = await EchoBackend.start("pod-a")
    try:
        svc = service("echo", [pod])
        quiet = snapshot([route(svc, host=HOST)], settings=ProxySettings(enable_access_log=False))
        async with running_proxy(quiet) as proxy:
            proxy.server.recorder.set_sink(log)
            await _sequence(proxy.port)
            assert pick(scrape(proxy.server), "nginx_ingress_controller_requests") == 7  # still counted
        await pod.close()
        log.close()
        os.close(write_end)
        assert list(_lines(read_end)) == []
    finally:
        os.close(read_end)


@async_test
async def test_log_format_upstream_template() -> None:
    read_end, write_end = os.pipe()
    log = AccessLog(fd=write_end)
    pod = await EchoBackend.start("pod-a")
    template = '$remote_addr "$request" $status $upstream_addr [$proxy_upstream_name] "$http_user_agent" $req_id'
    try:
        svc = service("echo", [pod])
        settings = ProxySettings(log_format_upstream=template)
        async with running_proxy(snapshot([route(svc, host=HOST)], settings=settings)) as proxy:
            proxy.server.recorder.set_sink(log)
            async with await proxy.client() as c:
                await c.request("GET", '/a"b?x=1', host=HOST, headers=[("User-Agent", "curl/8")])
        await pod.close()
        log.close()
        os.close(write_end)
        data = os.read(read_end, 65536).decode()
    finally:
        os.close(read_end)
    request_id = pod.requests[0].header("x-request-id")
    assert data == (f'127.0.0.1 "GET /a\\x22b?x=1 HTTP/1.1" 200 {pod.endpoint.key} [default-echo-80] "curl/8" '
                    f"{request_id}\n")


@async_test
async def test_a_refused_request_is_counted_and_logged_without_a_route() -> None:
    read_end, write_end = os.pipe()
    log = AccessLog(fd=write_end)
    try:
        async with running_proxy(snapshot([])) as proxy:
            proxy.server.recorder.set_sink(log)
            async with await proxy.client() as c:
                await c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")  # two Hosts: 400
                assert (await c.response()).status == 400
            m = scrape(proxy.server)
        log.close()
        os.close(write_end)
        lines = list(_lines(read_end))
    finally:
        os.close(read_end)
    assert pick(m, "nginx_ingress_controller_requests", status="400", method="GET", ingress="") == 1
    assert pick(m, "nginx_ingress_controller_response_size_sum", status="400") > 0
    assert [(line["status"], line["method"], line["upstream_addr"]) for line in lines] == [(400, "GET", None)]


@async_test
async def test_a_route_with_enable_access_log_false_is_counted_but_not_logged() -> None:
    from dataclasses import replace

    read_end, write_end = os.pipe()
    log = AccessLog(fd=write_end)
    pod = await EchoBackend.start("pod-a")
    try:
        svc = service("echo", [pod])
        loud, quiet = route(svc, "/", host=HOST), replace(route(svc, "/healthz", host=HOST), access_log=False)
        async with running_proxy(snapshot([loud, quiet])) as proxy:
            proxy.server.recorder.set_sink(log)
            async with await proxy.client() as c:
                for target in ("/healthz", "/", "/healthz"):
                    assert (await c.request("GET", target, host=HOST)).status == 200
            m = scrape(proxy.server)
        await pod.close()
        log.close()
        os.close(write_end)
        lines = list(_lines(read_end))
    finally:
        os.close(read_end)
    assert pick(m, "nginx_ingress_controller_requests", path="/healthz") == 2
    assert [line["path"] for line in lines] == ["/"]
