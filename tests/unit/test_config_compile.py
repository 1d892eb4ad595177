"""compile_snapshot: merging, conflicts by age, default backend, unsupported backends, settings, equality."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from pyngress.config import CompileOptions, build_from_paths, compile_snapshot, parse_manifest
from pyngress.model import KubeObject, PathType, Problem, Snapshot


def ingress(
    name: str,
    paths: list[tuple[str, str, str]],
    *,
    host: str = "foo.com",
    created: str = "",
    namespace: str = "default",
    default: str | None = None,
) -> dict[str, Any]:
    """An Ingress manifest; paths are (path, pathType, service)."""
    spec: dict[str, Any] = {"ingressClassName": "pyngress"}
    if paths:
        spec["rules"] = [
            {
                "host": host,
                "http": {
                    "paths": [
                        {"path": p, "pathType": t, "backend": {"service": {"name": s, "port": {"number": 80}}}}
                        for p, t, s in paths
                    ]
                },
            }
        ]
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    meta = {"name": name, "namespace": namespace, "creationTimestamp": created}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def service(name: str, namespace: str = "default") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [{"port": 80}]}}


def configmap(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def compile_docs(*docs: dict[str, Any], options: CompileOptions | None = None) -> Snapshot:
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for doc in docs:
        obj, found = parse_manifest(doc, f"{doc['metadata']['name']}.yaml")
        problems += found
        if obj is not None:
            objects.append(obj)
    return compile_snapshot(objects, options or CompileOptions(), problems=problems)


def table(snapshot: Snapshot) -> list[tuple[str, str, str, str]]:
    return [(r.host, r.path, r.path_type.value, r.ingress) for r in snapshot.routes]


def test_ingresses_for_one_host_are_merged() -> None:
    snap = compile_docs(
        ingress("a", [("/api", "Prefix", "api")]),
        ingress("b", [("/", "Prefix", "web")]),
        service("api"),
        service("web"),
    )
    assert table(snap) == [("foo.com", "/", "Prefix", "default/b"), ("foo.com", "/api", "Prefix", "default/a")]
    assert snap.problems == ()


def test_same_path_in_two_ingresses_goes_to_the_oldest() -> None:
    new = ingress("new", [("/", "Prefix", "web")], created="2024-06-01T00:00:00Z")
    old = ingress("old", [("/", "Prefix", "web")], created="2023-01-01T00:00:00Z")
    snap = compile_docs(new, old, service("web"))
    assert table(snap) == [("foo.com", "/", "Prefix", "default/old")]
    [problem] = snap.problems
    assert (problem.name, problem.severity, problem.field) == ("new", "warning", "spec.rules[0].http.paths[0]")
    assert "already served by the older Ingress default/old" in problem.message


def test_equal_age_conflict_is_decided_by_namespace_and_name() -> None:
    snap = compile_docs(
        ingress("b", [("/", "Prefix", "web")]), ingress("a", [("/", "Prefix", "web")]), service("web")
    )
    assert table(snap)[0][3] == "default/a"
    assert snap.problems[0].name == "b"


def test_same_path_with_other_path_type_is_not_a_conflict() -> None:
    snap = compile_docs(
        ingress("a", [("/x", "Exact", "web")]), ingress("b", [("/x", "Prefix", "web")]), service("web")
    )
    assert [r[2] for r in table(snap)] == ["Exact", "Prefix"] and snap.problems == ()


def test_same_path_on_other_host_is_not_a_conflict() -> None:
    snap = compile_docs(
        ingress("a", [("/", "Prefix", "web")]),
        ingress("b", [("/", "Prefix", "web")], host="bar.com"),
        service("web"),
    )
    assert [r[0] for r in table(snap)] == ["bar.com", "foo.com"] and snap.problems == ()


def test_default_backend_of_the_oldest_ingress_wins() -> None:
    snap = compile_docs(
        ingress("young", [], default="web", created="2024-02-01T00:00:00Z"),
        ingress("elder", [], default="fallback", created="2024-01-01T00:00:00Z"),
        service("web"),
        service("fallback"),
    )
    assert snap.default_backend is not None and snap.default_backend.key == "default/fallback:80"
    [problem] = snap.problems
    assert (problem.name, problem.field, problem.severity) == ("young", "spec.defaultBackend", "warning")
    assert "default/elder" in problem.message
    assert set(snap.backends) == {"default/fallback:80"}


def test_no_default_backend_is_none() -> None:
    assert compile_docs(ingress("a", [("/", "Prefix", "web")]), service("web")).default_backend is None


def test_resource_backend_is_a_warning_and_not_served() -> None:
    doc = ingress("a", [("/static", "Prefix", "x"), ("/", "Prefix", "web")])
    doc["spec"]["rules"][0]["http"]["paths"][0]["backend"] = {"resource": {"kind": "Bucket", "name": "assets"}}
    snap = compile_docs(doc, service("web"))
    assert table(snap) == [("foo.com", "/", "Prefix", "default/a")]
    [problem] = snap.problems
    assert (problem.field, problem.severity) == ("spec.rules[0].http.paths[0].backend.resource", "warning")
    assert "Bucket assets" in problem.message


def test_field_paths_count_rejected_paths_like_the_manifest() -> None:
    doc = ingress("a", [("bad", "Prefix", "web"), ("/x", "Prefix", "missing")])
    snap = compile_docs(doc, service("web"))
    assert [p.field for p in snap.problems] == [
        "spec.rules[0].http.paths[0].path",
        "spec.rules[0].http.paths[1].backend.service.name",
    ]


def test_invalid_ingress_does_not_affect_others() -> None:
    bad = ingress("bad", [("/", "Prefix", "web")], host="BAD.com")
    snap = compile_docs(bad, ingress("good", [("/", "Prefix", "web")]), service("web"))
    assert table(snap) == [("foo.com", "/", "Prefix", "default/good")]
    assert [(p.name, p.field) for p in snap.problems] == [("bad", "spec.rules[0].host")]


def test_problems_of_ingresses_of_other_classes_are_not_reported() -> None:
    theirs = ingress("theirs", [("nope", "Prefix", "web")], host="BAD.com")
    theirs["spec"]["ingressClassName"] = "nginx"
    unclassed = ingress("unclassed", [])
    del unclassed["spec"]["ingressClassName"]
    snap = compile_docs(theirs, unclassed)
    assert snap.problems == ()
    snap = compile_docs(theirs, unclassed, options=CompileOptions(ingress_class="nginx"))
    assert [(p.name, p.field) for p in snap.problems] == [("theirs", "spec.rules[0].host")]


def test_backend_is_resolved_in_the_ingress_namespace() -> None:
    snap = compile_docs(ingress("a", [("/", "Prefix", "web")], namespace="shop"), service("web", "other"))
    assert snap.routes[0].backend.key == "shop/web:80"
    assert snap.routes[0].backend.problem == "Service shop/web not found"


def test_duplicate_object_is_ignored_with_a_warning() -> None:
    first = ingress("a", [("/one", "Prefix", "web")])
    again = ingress("a", [("/two", "Prefix", "web")])
    snap = compile_docs(first, again, service("web"))
    assert [r[1] for r in table(snap)] == ["/one"]
    assert [(p.field, p.severity) for p in snap.problems] == [("metadata.name", "warning")]


@pytest.mark.parametrize(
    ("selector", "expected_timeout"),
    [("pyngress", 2.0), ("ingress/pyngress", 2.0), ("kube-system/pyngress", 1.0), ("nope", 60.0)],
)
def test_configmap_selection(selector: str, expected_timeout: float) -> None:
    docs = [
        configmap("pyngress", "kube-system", **{"proxy-read-timeout": "1"}),
        configmap("pyngress", "ingress", **{"proxy-read-timeout": "2"}),
    ]
    snap = compile_docs(*docs, options=CompileOptions(configmap=selector))
    assert snap.settings.proxy_read_timeout == expected_timeout


def test_settings_problems_are_in_the_snapshot() -> None:
    snap = compile_docs(configmap("pyngress", "default", **{"keep-alive": "forever"}))
    assert [(p.kind, p.field) for p in snap.problems] == [("ConfigMap", "data.keep-alive")]


def test_equal_inputs_in_any_order_give_equal_snapshots() -> None:
    docs = [
        ingress("a", [("/api", "Prefix", "api"), ("/x", "Exact", "web")], created="2024-01-01T00:00:00Z"),
        ingress("b", [("/", "Prefix", "web"), ("/api", "Prefix", "web")], default="web"),
        ingress("c", [("/", "ImplementationSpecific", "gone")], host="*.foo.com"),
        service("api"),
        service("web"),
        configmap("pyngress", "default", **{"keep-alive": "bad"}),
    ]
    first = compile_docs(*docs)
    shuffled = docs[:]
    random.Random(7).shuffle(shuffled)
    second = compile_docs(*shuffled)
    assert first == second
    assert hash(first.routes) == hash(second.routes)
    assert dataclasses.replace(compile_docs(*docs), version=5) != first
    assert dataclasses.replace(compile_snapshot([], CompileOptions(), version=5), version=1) == compile_snapshot(
        [], CompileOptions()
    )


def test_snapshot_backends_are_read_only() -> None:
    snap = compile_docs(ingress("a", [("/", "Prefix", "web")]), service("web"))
    with pytest.raises(TypeError):
        snap.backends["x"] = snap.routes[0].backend  # type: ignore[index]


def test_snapshot_route_host_is_lower_case_and_empty_for_no_host() -> None:
    doc = ingress("a", [("/", "Prefix", "web")])
    doc["spec"]["rules"].append(
        {
            "http": {
                "paths": [
                    {
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}},
                    }
                ]
            }
        }
    )
    snap = compile_docs(doc, service("web"))
    assert [(r.host, r.path_type) for r in snap.routes] == [("foo.com", PathType.PREFIX), ("", PathType.PREFIX)]


def test_build_from_paths_reads_files(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text("""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  ingressClassName: pyngress
  defaultBackend: {service: {name: web, port: {number: 80}}}
""")
    snap = build_from_paths([tmp_path], CompileOptions(), version=3)
    assert snap.version == 3
    assert snap.default_backend is not None and snap.default_backend.problem == "Service default/web not found"
    assert snap.problems[0].source == str(tmp_path / "site.yaml")
