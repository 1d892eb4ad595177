"""Layer 4 configuration: ConfigMap entries, LoadBalancer Services, conflicts and problems, the check table."""

from __future__ import annotations

from typing import Any

import pytest

from pyngress.config import CompileOptions, compile_snapshot, format_check, parse_manifest
from pyngress.config.streams import (
    StreamEntry,
    StreamOptions,
    load_balancer_ports,
    load_balancer_status,
    parse_entry,
)
from pyngress.model import KubeObject, Snapshot


@pytest.mark.parametrize(("key", "value", "entry"), [
    ("9000", "shop/db:5432", StreamEntry(9000, "shop", "db", "5432")),
    ("9000", "shop/db:postgres", StreamEntry(9000, "shop", "db", "postgres")),
    ("53", "kube-system/dns:53:PROXY", StreamEntry(53, "kube-system", "dns", "53", accept_proxy=True)),
    ("1", "a/b:1::PROXY", StreamEntry(1, "a", "b", "1", send_proxy=1)),
    ("65535", "a/b:1:PROXY:PROXY", StreamEntry(65535, "a", "b", "1", True, 1)),
    ("8", "a/b:1:PROXY:PROXYv2", StreamEntry(8, "a", "b", "1", True, 2)),
])
def test_entries_in_ingress_nginx_format(key: str, value: str, entry: StreamEntry) -> None:
    assert parse_entry(key, value) == entry


@pytest.mark.parametrize(("key", "value", "message"), [
    ("http", "a/b:1", "not a port number"),
    ("0", "a/b:1", "not a port number"),
    ("70000", "a/b:1", "not a port number"),
    ("9000", "a/b", "is not 'namespace/service:port"),
    ("9000", "b:1", "is not 'namespace/service'"),
    ("9000", "a/b/c:1", "is not 'namespace/service'"),
    ("9000", "a/b:0", "is not a Service port"),
    ("9000", "a/b::", "is not a Service port"),
    ("9000", "a/b:1:proxy", "the third field"),
    ("9000", "a/b:1::PROXYv3", "the fourth field"),
    ("9000", "a/b:1:PROXY:PROXY:x", "is not 'namespace/service:port"),
])
def test_bad_entries_say_what_is_wrong(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_entry(key, value)


def _service(name: str, *, ports: list[dict[str, Any]], namespace: str = "shop", created: str = "",
             annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "creationTimestamp": created, "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": ports, **spec}}


def _slice(service: str, port: int, addresses: list[str], *, port_name: str = "",
           namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service}-{port}", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": port_name, "port": port}], "endpoints": [{"addresses": addresses}]}


def _configmap(name: str, data: dict[str, str], namespace: str = "ingress") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _compile(docs: list[dict[str, Any]], **options: Any) -> Snapshot:
    objects: list[KubeObject] = []
    for doc in docs:
        obj, problems = parse_manifest(doc, "streams.yaml")
        assert obj is not None, problems
        objects.append(obj)
    streams = StreamOptions(**{"tcp_services_configmap": "ingress/tcp", "udp_services_configmap": "ingress/udp",
                               **options})
    return compile_snapshot(objects, CompileOptions(streams=streams))


DB = [_service("db", ports=[{"name": "pg", "port": 5432}]),
      _slice("db", 5432, ["10.0.0.1", "10.0.0.2"], port_name="pg")]
DNS = [_service("dns", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
       _slice("dns", 53, ["10.0.1.1"], port_name="dns")]


def test_configmap_entries_become_stream_services() -> None:
    snap = _compile([*DB, *DNS, _configmap("tcp", {"9000": "shop/db:pg:PROXY:PROXY"}),
                     _configmap("udp", {"5353": "shop/dns:53"})])  # by name and by number
    assert not snap.problems
    tcp, udp = snap.streams
    assert (tcp.listen_key, tcp.backend.key, tcp.accept_proxy, tcp.send_proxy) == (
        "tcp/9000", "shop/db:pg", True, 1)
    assert [e.key for e in tcp.backend.endpoints] == ["10.0.0.1:5432", "10.0.0.2:5432"]
    assert tcp.origin == "ConfigMap ingress/tcp data.9000" and not tcp.load_balancer
    assert (udp.listen_key, udp.backend.key, [e.key for e in udp.backend.endpoints]) == (
        "udp/5353", "shop/dns:53", ["10.0.1.1:53"])


def test_nothing_is_served_without_the_flags() -> None:
    snap = _compile([*DB, _configmap("tcp", {"9000": "shop/db:pg"})], tcp_services_configmap="",
                    udp_services_configmap="")
    assert snap.streams == () and not snap.problems


def test_bad_and_broken_entries_are_problems_on_the_configmap_field() -> None:
    snap = _compile([*DB, _configmap("tcp", {"9000": "shop/db", "9001": "shop/missing:80", "9002": "shop/db:99"}),
                     _configmap("udp", {"53": "shop/db:pg:PROXY"})])
    problems = {(p.name, p.field, p.severity): p.message for p in snap.problems if "listener" not in p.message}
    assert "is not 'namespace/service:port" in problems[("tcp", "data.9000", "error")]
    assert problems[("tcp", "data.9001", "error")] == "Service shop/missing not found: connections are closed"
    assert problems[("tcp", "data.9002", "error")] == "Service shop/db has no port 99: connections are closed"
    assert problems[("udp", "data.53", "warning")] == "PROXY protocol is not supported on UDP: ignored"
    assert [p.message for p in snap.problems if p.name == "tcp" and "listener" in p.message] == []
    assert [p.message for p in snap.problems if p.name == "udp" and "listener" in p.message] == [
        "the Service port is TCP, this listener is UDP"]
    # the broken ones keep their listener (closed connections, not a vanished port); the malformed one has none
    assert [s.listen_key for s in snap.streams] == ["tcp/9001", "tcp/9002", "udp/53"]


def test_load_balancer_services_get_a_listener_per_port() -> None:
    svc = _service("game", type="LoadBalancer", ports=[
        {"name": "tcp", "port": 7000, "protocol": "TCP"}, {"name": "udp", "port": 7001, "protocol": "UDP"},
        {"name": "sctp", "port": 7002, "protocol": "SCTP"}],
        annotations={"pyngress.io/send-proxy-protocol": "v2", "pyngress.io/accept-proxy-protocol": "true"},
        externalTrafficPolicy="Local", sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    ports = [{"name": "tcp", "port": 7000}, {"name": "udp", "port": 7001}]
    slices = [{**_slice("game", 0, ["10.0.2.1"]), "ports": ports}]
    snap = _compile([svc, *slices], serve_load_balancer_services=True, lb_port_offset=1000)
    tcp, udp = snap.streams
    assert (tcp.listen_key, tcp.service_port, tcp.send_proxy, tcp.accept_proxy, tcp.external_traffic_policy) == (
        "tcp/8000", 7000, 2, True, "Local")
    assert (udp.listen_key, udp.send_proxy, udp.accept_proxy) == ("udp/8001", 0, False)  # no PROXY on UDP
    assert tcp.affinity.kind == "client-ip" and tcp.affinity.timeout == 60
    assert [(p.field, p.severity) for p in snap.problems] == [("spec.ports[2].protocol", "warning")]
    assert load_balancer_ports(snap.streams) == {"shop/game": ((7000, "TCP"), (7001, "UDP"))}


def test_load_balancer_problems() -> None:
    local = _service("a", type="LoadBalancer", ports=[{"port": 80}], externalTrafficPolicy="Local")
    too_high = _service("b", type="LoadBalancer", ports=[{"port": 65000}])
    bad = _service("c", type="LoadBalancer", ports=[{"port": 81}],
                   annotations={"pyngress.io/send-proxy-protocol": "v3", "pyngress.io/load-balance": "fastest"})
    snap = _compile([local, too_high, bad], serve_load_balancer_services=True, lb_port_offset=1000)
    found = sorted((p.name, p.field, p.severity) for p in snap.problems if "not found" not in p.message)
    assert found == [
        ("a", "spec.externalTrafficPolicy", "warning"),
        ("b", "spec.ports[0].port", "error"),
        ("c", "metadata.annotations[pyngress.io/load-balance]", "error"),
        ("c", "metadata.annotations[pyngress.io/send-proxy-protocol]", "error"),
    ]
    assert [s.listen_key for s in snap.streams] == ["tcp/1080", "tcp/1081"]


def test_a_taken_port_goes_to_the_configmap_then_the_oldest_service() -> None:
    older = _service("old", type="LoadBalancer", ports=[{"port": 9000}], created="2024-01-01T00:00:00Z")
    newer = _service("new", type="LoadBalancer", ports=[{"port": 9000}, {"port": 9100}],
                     created="2025-01-01T00:00:00Z")
    snap = _compile([older, newer], serve_load_balancer_services=True)
    assert [(s.listen_key, s.service) for s in snap.streams] == [
        ("tcp/9000", "shop/old"), ("tcp/9100", "shop/new")]
    taken = [p for p in snap.problems if "already served" in p.message]
    assert [(p.name, p.field, p.severity) for p in taken] == [("new", "spec.ports[0]", "warning")]
    snap = _compile([older, _configmap("tcp", {"9000": "shop/old:9000"})], serve_load_balancer_services=True)
    assert snap.streams[0].origin == "ConfigMap ingress/tcp data.9000"


def test_balancing_from_the_service_annotation_or_the_configmap_default() -> None:
    annotations = {"nginx.ingress.kubernetes.io/load-balance": "least_conn"}
    svc = _service("db", ports=[{"port": 5432}], annotations=annotations)
    snap = _compile([svc, _configmap("tcp", {"1": "shop/db:5432", "2": "shop/other:1"}),
                     _configmap("pyngress", {"load-balance": "random"})])
    assert [s.balance.algorithm for s in snap.streams] == ["least_conn", "random"]


def test_check_lists_the_stream_services() -> None:
    snap = _compile([*DB, *DNS, _configmap("tcp", {"9000": "shop/db:pg::PROXYv2"}),
                     _configmap("udp", {"5353": "shop/dns:dns"})])
    lines = format_check(snap).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("PROTO"))
    assert lines[header].split() == ["PROTO", "PORT", "BACKEND", "ENDPOINTS", "BALANCE", "PROXY", "FROM"]
    assert lines[header + 1].split() == ["tcp", "9000", "shop/db:pg", "10.0.0.1:5432,", "+1", "more",
                                         "round_robin", "out", "v2", "ConfigMap", "ingress/tcp", "data.9000"]
    assert lines[header + 2].split() == ["udp", "5353", "shop/dns:dns", "10.0.1.1:53", "round_robin", "-",
                                         "ConfigMap", "ingress/udp", "data.5353"]


def test_a_stream_reload_that_changes_nothing_compares_equal() -> None:
    docs = [*DB, _configmap("tcp", {"9000": "shop/db:pg"})]
    assert _compile(docs) == _compile(list(reversed(docs)))


def test_the_status_the_kubernetes_source_writes_on_load_balancer_services() -> None:
    game = _service("game", type="LoadBalancer", ports=[{"name": "c", "port": 7777},
                                                         {"name": "s", "port": 7777, "protocol": "UDP"}])
    web = _service("web", type="LoadBalancer", ports=[{"port": 80}])
    snap = _compile([game, web, *DB, _configmap("tcp", {"9000": "shop/db:pg"})], serve_load_balancer_services=True,
                    lb_port_offset=10000)
    status = load_balancer_status(snap.streams, ["10.0.0.5", "lb.example.com"], bound={"tcp/17777", "udp/17777"})
    assert status == {
        "shop/game": {"loadBalancer": {"ingress": [
            {"ip": "10.0.0.5", "ports": [{"port": 7777, "protocol": "TCP"}, {"port": 7777, "protocol": "UDP"}]},
            {"hostname": "lb.example.com",
             "ports": [{"port": 7777, "protocol": "TCP"}, {"port": 7777, "protocol": "UDP"}]},
        ]}},
        "shop/web": {"loadBalancer": {}},  # its port 10080 is not bound: nothing to advertise
    }
    assert "shop/db" not in load_balancer_status(snap.streams, ["10.0.0.5"])  # a ConfigMap entry: no status


def test_the_configmaps_a_source_must_provide() -> None:
    assert StreamOptions().configmaps == ()
    assert StreamOptions(tcp_services_configmap="ingress/tcp").configmaps == ("ingress/tcp",)
    assert StreamOptions("ingress/tcp", "udp").configmaps == ("ingress/tcp", "udp")
