"""Endpoint resolution: Service port by name or number, slice ports, readiness, de-duplication, 503 backends."""

from __future__ import annotations

import yaml

from pyngress.config import CompileOptions, compile_snapshot, parse_manifest
from pyngress.model import Backend, KubeObject, Problem, Snapshot


def compile_yaml(text: str) -> Snapshot:
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for doc in filter(None, yaml.safe_load_all(text)):
        obj, found = parse_manifest(doc, "t.yaml")
        problems += found
        if obj is not None:
            objects.append(obj)
    return compile_snapshot(objects, CompileOptions(), problems=problems)


def ingress(port: str = "number: 80", service: str = "web") -> str:
    return f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: site}}
spec:
  ingressClassName: pyngress
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{{port}}}}}}}}}
---
"""


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 9000, targetPort: 9090}
---
"""


def slice_(name: str, endpoints: str, ports: str = "[{name: http, port: 8080}, {name: admin, port: 9090}]") -> str:
    return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, labels: {{kubernetes.io/service-name: web}}}}
ports: {ports}
endpoints: {endpoints}
---
"""


def backend(snapshot: Snapshot) -> Backend:
    assert len(snapshot.routes) == 1, snapshot.problems
    return snapshot.routes[0].backend


def keys(snapshot: Snapshot) -> list[str]:
    return [e.key for e in backend(snapshot).endpoints]


def test_port_by_number_uses_the_slice_port_of_the_same_name() -> None:
    snap = compile_yaml(ingress() + SERVICE + slice_("a", "[{addresses: [10.0.0.1], targetRef: {name: web-1}}]"))
    b = backend(snap)
    assert (b.key, b.problem) == ("default/web:80", "")
    assert [(e.address, e.port, e.weight, e.name) for e in b.endpoints] == [("10.0.0.1", 8080, 1, "web-1")]
    assert snap.backends == {"default/web:80": b}


def test_port_by_name() -> None:
    snap = compile_yaml(ingress("name: admin") + SERVICE + slice_("a", "[{addresses: [10.0.0.1]}]"))
    assert backend(snap).key == "default/web:admin"
    assert keys(snap) == ["10.0.0.1:9090"]


def test_unready_endpoints_are_not_used() -> None:
    endpoints = "[{addresses: [10.0.0.1]}, {addresses: [10.0.0.2], conditions: {ready: false}}]"
    assert keys(compile_yaml(ingress() + SERVICE + slice_("a", endpoints))) == ["10.0.0.1:8080"]


def test_serving_terminating_endpoints_are_used_only_when_none_is_ready() -> None:
    # issue 6: kube-proxy's fallback, so the last pods of a rollout drain instead of failing. Issue 7: the
    # terminating ones stay in the Backend, marked, and health.selection applies the rule at run time.
    from pyngress.health.selection import effective

    def used(snap: Snapshot) -> list[str]:
        return [e.key for e in effective(backend(snap).endpoints, ())[0] if e.weight > 0]

    draining = "{addresses: [10.0.0.3], conditions: {ready: false, serving: true, terminating: true}}"
    gone = "{addresses: [10.0.0.4], conditions: {ready: false, serving: false, terminating: true}}"
    with_ready = f"[{{addresses: [10.0.0.1]}}, {draining}, {gone}]"
    snap = compile_yaml(ingress() + SERVICE + slice_("a", with_ready))
    assert keys(snap) == ["10.0.0.1:8080", "10.0.0.3:8080"]  # 10.0.0.4 no longer serves: dropped
    assert used(snap) == ["10.0.0.1:8080"]
    only_terminating = f"[{draining}, {gone}]"
    assert used(compile_yaml(ingress() + SERVICE + slice_("a", only_terminating))) == ["10.0.0.3:8080"]


def test_no_ready_endpoints_is_not_a_config_problem() -> None:
    snap = compile_yaml(ingress() + SERVICE + slice_("a", "[{addresses: [10.0.0.1], conditions: {ready: false}}]"))
    assert backend(snap).endpoints == () and backend(snap).problem == "" and snap.problems == ()


def test_endpoints_from_several_slices_are_merged_deduplicated_and_sorted() -> None:
    first = slice_("b", "[{addresses: [10.0.0.3, 10.0.0.1]}]")
    second = slice_("a", "[{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]")
    assert keys(compile_yaml(ingress() + SERVICE + first + second)) == [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
        "10.0.0.3:8080",
    ]


def test_slice_of_another_namespace_or_service_is_not_used() -> None:
    other = slice_("x", "[{addresses: [10.9.9.9]}]").replace("{name: x,", "{name: x, namespace: other,")
    unrelated = slice_("y", "[{addresses: [10.8.8.8]}]").replace("service-name: web", "service-name: api")
    assert keys(compile_yaml(ingress() + SERVICE + other + unrelated)) == []


def test_slice_without_matching_port_name_is_skipped() -> None:
    assert (
        keys(
            compile_yaml(ingress() + SERVICE + slice_("a", "[{addresses: [10.0.0.1]}]", "[{name: grpc, port: 1}]"))
        )
        == []
    )


def test_slice_without_ports_falls_back_to_numeric_target_port() -> None:
    assert keys(compile_yaml(ingress() + SERVICE + slice_("a", "[{addresses: [10.0.0.1]}]", "[]"))) == [
        "10.0.0.1:8080"
    ]


def test_unnamed_service_port_matches_unnamed_slice_port() -> None:
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n"
    snap = compile_yaml(ingress() + service + slice_("a", "[{addresses: [10.0.0.1]}]", "[{port: 3000}]"))
    assert keys(snap) == ["10.0.0.1:3000"]


def test_ipv6_endpoint_key_has_brackets() -> None:
    snap = compile_yaml(ingress() + SERVICE + slice_("a", "[{addresses: ['fd00::1']}]"))
    assert keys(snap) == ["[fd00::1]:8080"]


def test_missing_service_keeps_the_route_with_a_503_backend() -> None:
    snap = compile_yaml(ingress(service="nope"))
    b = backend(snap)
    assert (b.endpoints, b.problem) == ((), "Service default/nope not found")
    [problem] = snap.problems
    assert problem.field == "spec.rules[0].http.paths[0].backend.service.name"
    assert (problem.kind, problem.name, problem.severity) == ("Ingress", "site", "error")
    assert "Service default/nope not found" in problem.message


def test_missing_service_port_names_the_port_field() -> None:
    snap = compile_yaml(ingress("name: grpc") + SERVICE)
    assert backend(snap).problem == "Service default/web has no port named 'grpc'"
    assert [p.field for p in snap.problems] == ["spec.rules[0].http.paths[0].backend.service.port"]


def test_missing_service_port_number() -> None:
    snap = compile_yaml(ingress("number: 81") + SERVICE)
    assert backend(snap).problem == "Service default/web has no port 81"


def test_external_name_service_is_a_problem_and_answers_503() -> None:
    service = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: ExternalName, externalName: a.b}\n"
    )
    snap = compile_yaml(ingress() + service)
    assert backend(snap).problem == "ExternalName services are not supported yet"
    assert backend(snap).endpoints == ()
    assert "ExternalName services are not supported yet" in snap.problems[0].message


def test_backend_problem_is_reported_once_per_ingress() -> None:
    extra = "      - {path: /a, pathType: Exact, backend: {service: {name: nope, port: {number: 80}}}}\n"
    text = ingress(service="nope").replace("      - {path: /,", extra + "      - {path: /,")
    snap = compile_yaml(text)
    assert len(snap.routes) == 2
    assert [p.field for p in snap.problems] == ["spec.rules[0].http.paths[0].backend.service.name"]
