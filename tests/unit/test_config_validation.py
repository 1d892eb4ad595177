"""Ingress validation: each API-server rule gives one Problem with its field path, and drops only what it must."""

from __future__ import annotations

from typing import Any

import pytest

from pyngress.config import parse_manifest
from pyngress.config.ingress import REJECTED_PATH, REJECTED_RULE
from pyngress.model import Ingress, PathType, Problem

SVC = {"service": {"name": "web", "port": {"number": 80}}}


def ingress_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "site", "namespace": "shop"},
        "spec": spec,
    }


def with_path(**path: Any) -> dict[str, Any]:
    entry = {"path": "/", "pathType": "Prefix", "backend": SVC} | path
    return ingress_doc({"rules": [{"host": "foo.com", "http": {"paths": [entry]}}]})


def with_host(host: str) -> dict[str, Any]:
    rule = {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": SVC}]}}
    return ingress_doc({"rules": [rule]})


def parse(doc: dict[str, Any]) -> tuple[Ingress | None, list[Problem]]:
    obj, problems = parse_manifest(doc, "site.yaml")
    assert obj is None or isinstance(obj, Ingress)
    return obj, problems


def only_problem(doc: dict[str, Any]) -> Problem:
    _, problems = parse(doc)
    assert len(problems) == 1, problems
    return problems[0]


P0 = "spec.rules[0].http.paths[0]"


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        pytest.param(with_path(path="foo"), f"{P0}.path", "absolute", id="path-must-start-with-slash"),
        pytest.param(with_path(path="", pathType="Exact"), f"{P0}.path", "required", id="exact-needs-path"),
        pytest.param(with_path(path="foo", pathType="ImplementationSpecific"), f"{P0}.path", "absolute",
                     id="impl-specific-path-must-be-absolute"),
        pytest.param(with_path(path="/a//b"), f"{P0}.path", "'//'", id="prefix-path-without-double-slash"),
        pytest.param(with_path(path="/a/../b"), f"{P0}.path", "'/../'", id="prefix-path-without-dot-dot"),
        pytest.param(with_path(path="/a%2Fb", pathType="Exact"), f"{P0}.path", "'%2F'", id="no-encoded-slash"),
        pytest.param(with_path(path="/a/."), f"{P0}.path", "'/.'", id="no-trailing-dot-segment"),
        pytest.param(with_path(pathType=None), f"{P0}.pathType", "required", id="path-type-required"),
        pytest.param(with_path(pathType="Regex"), f"{P0}.pathType", "'Regex'", id="path-type-must-be-known"),
        pytest.param(with_host("Foo.com"), "spec.rules[0].host", "lower case", id="host-must-be-lower-case"),
        pytest.param(with_host("foo.com:8080"), "spec.rules[0].host", "port", id="host-has-no-port"),
        pytest.param(with_host("10.0.0.1"), "spec.rules[0].host", "IP address", id="host-is-not-ipv4"),
        pytest.param(with_host("::1"), "spec.rules[0].host", "IP address", id="host-is-not-ipv6"),
        pytest.param(with_host("foo.*.com"), "spec.rules[0].host", "wildcard", id="wildcard-only-first-label"),
        pytest.param(with_host("*"), "spec.rules[0].host", "wildcard", id="bare-wildcard-is-invalid"),
        pytest.param(with_host("-foo.com"), "spec.rules[0].host", "DNS-1123", id="label-starts-alphanumeric"),
        pytest.param(with_host("foo_bar.com"), "spec.rules[0].host", "DNS-1123", id="no-underscore"),
        pytest.param(with_host("foo.com."), "spec.rules[0].host", "DNS-1123", id="no-trailing-dot"),
        pytest.param(with_host("a" * 64 + ".com"), "spec.rules[0].host", "63", id="label-max-63"),
        pytest.param(with_path(backend={}), f"{P0}.backend", "exactly one of service or resource",
                     id="backend-needs-service-or-resource"),
        pytest.param(with_path(backend=SVC | {"resource": {"kind": "Bucket", "name": "b"}}), f"{P0}.backend",
                     "exactly one", id="backend-not-both"),
        pytest.param(with_path(backend={"service": {"port": {"number": 80}}}), f"{P0}.backend.service.name",
                     "required", id="service-needs-name"),
        pytest.param(with_path(backend={"service": {"name": "web", "port": {}}}), f"{P0}.backend.service.port",
                     "exactly one of name or number", id="port-needs-name-or-number"),
        pytest.param(with_path(backend={"service": {"name": "web", "port": {"name": "http", "number": 80}}}),
                     f"{P0}.backend.service.port", "exactly one", id="port-not-both"),
        pytest.param(with_path(backend={"service": {"name": "web", "port": {"number": 70000}}}),
                     f"{P0}.backend.service.port.number", "65535", id="port-number-in-range"),
        pytest.param(with_path(backend={"service": {"name": "web", "port": {"number": "80"}}}),
                     f"{P0}.backend.service.port.number", "integer", id="port-number-is-integer"),
        pytest.param(ingress_doc({"rules": [{"host": "foo.com", "http": {"paths": []}}]}),
                     "spec.rules[0].http.paths", "at least one path", id="http-needs-a-path"),
        pytest.param(ingress_doc({"defaultBackend": {"service": {"name": "web"}}, "rules": []}),
                     "spec.defaultBackend.service.port", "required", id="default-backend-is-validated"),
    ],
)
def test_invalid_ingress_field_gives_one_problem(doc: dict[str, Any], field: str, words: str) -> None:
    problem = only_problem(doc)
    assert (problem.kind, problem.namespace, problem.name) == ("Ingress", "shop", "site")
    assert problem.source == "site.yaml"
    assert problem.field == field
    assert words in problem.message
    assert problem.severity == "error"


@pytest.mark.parametrize("host", ["foo.com", "*.foo.com", "a-b.c-d.example", "x", "1.example.com", "*.com"])
def test_valid_hosts_are_accepted(host: str) -> None:
    obj, problems = parse(with_host(host))
    assert problems == []
    assert obj is not None and obj.rules[0].host == host


def test_ingress_without_rules_or_default_backend_is_a_problem_and_serves_nothing() -> None:
    obj, problems = parse(ingress_doc({"ingressClassName": "pyngress"}))
    assert obj is not None and (obj.rules, obj.default_backend) == ((), None)
    assert [(p.field, p.message) for p in problems] == [("spec", "must have rules or a defaultBackend")]


def test_missing_spec_is_one_problem() -> None:
    doc = ingress_doc({})
    del doc["spec"]
    obj, problems = parse(doc)
    assert obj is None and [p.field for p in problems] == ["spec"]


def test_invalid_path_is_dropped_but_siblings_are_kept() -> None:
    good = {"path": "/ok", "pathType": "Exact", "backend": SVC}
    bad = {"path": "nope", "pathType": "Prefix", "backend": SVC}
    doc = ingress_doc({"rules": [{"host": "foo.com", "http": {"paths": [bad, good]}}]})
    obj, problems = parse(doc)
    assert [p.field for p in problems] == [f"{P0}.path"]
    assert obj is not None
    # the rejected path keeps its slot so that later field paths still count like the manifest
    assert obj.rules[0].paths[0] == REJECTED_PATH
    assert (obj.rules[0].paths[1].path, obj.rules[0].paths[1].path_type) == ("/ok", PathType.EXACT)


def test_invalid_rule_is_dropped_but_other_rules_are_kept() -> None:
    rule = {"host": "BAD.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": SVC}]}}
    other = {"host": "good.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": SVC}]}}
    obj, problems = parse(ingress_doc({"rules": [rule, other]}))
    assert [p.field for p in problems] == ["spec.rules[0].host"]
    assert obj is not None and obj.rules == (REJECTED_RULE, obj.rules[1])
    assert obj.rules[1].host == "good.com"


def test_invalid_default_backend_keeps_rules() -> None:
    spec = {"defaultBackend": {"service": {"name": ""}}, "rules": [with_host("foo.com")["spec"]["rules"][0]]}
    obj, problems = parse(ingress_doc(spec))
    assert [p.field for p in problems] == ["spec.defaultBackend.service.name"]
    assert obj is not None and obj.default_backend is None and len(obj.rules) == 1


def test_empty_implementation_specific_path_means_root() -> None:
    obj, problems = parse(with_path(path=None, pathType="ImplementationSpecific"))
    assert problems == []
    assert obj is not None and obj.rules[0].paths[0].path == "/"


def test_rule_without_http_is_valid_and_has_no_paths() -> None:
    obj, problems = parse(ingress_doc({"rules": [{"host": "foo.com"}]}))
    assert problems == [] and obj is not None and obj.rules[0].paths == ()


def test_resource_backend_parses_as_valid() -> None:
    backend = {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "static"}}
    obj, problems = parse(with_path(backend=backend))
    assert problems == []
    assert obj is not None
    resource = obj.rules[0].paths[0].backend.resource
    assert resource is not None and (resource.kind, resource.name) == ("StorageBucket", "static")


def test_port_by_name_is_kept_as_written() -> None:
    obj, _ = parse(with_path(backend={"service": {"name": "web", "port": {"name": "http"}}}))
    assert obj is not None
    ref = obj.rules[0].paths[0].backend.service
    assert ref is not None and (ref.port_name, ref.port_number, ref.port_text) == ("http", None, "http")


def test_tls_is_parsed() -> None:
    doc = with_host("foo.com")
    doc["spec"]["tls"] = [{"hosts": ["foo.com"], "secretName": "foo-tls"}]
    obj, problems = parse(doc)
    assert problems == [] and obj is not None
    assert (obj.tls[0].hosts, obj.tls[0].secret_name) == (("foo.com",), "foo-tls")


def test_several_problems_in_one_ingress_are_all_reported() -> None:
    paths = [
        {"path": "x", "pathType": "Prefix", "backend": SVC},
        {"path": "/y", "backend": SVC},
        {"path": "/z", "pathType": "Exact", "backend": {}},
    ]
    _, problems = parse(ingress_doc({"rules": [{"http": {"paths": paths}}, {"host": "A.com"}]}))
    assert [p.field for p in problems] == [
        "spec.rules[0].http.paths[0].path",
        "spec.rules[0].http.paths[1].pathType",
        "spec.rules[0].http.paths[2].backend",
        "spec.rules[1].host",
    ]
