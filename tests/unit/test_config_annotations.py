"""Balancing annotations: both prefixes, precedence, defaults from the ConfigMap, problems for bad values."""

from __future__ import annotations

from typing import Any

import pytest

from pyngress.config import CompileOptions, compile_snapshot, format_check, parse_manifest
from pyngress.model import DEFAULT_BALANCE, BalanceSpec, KubeObject, Snapshot


def ingress(annotations: dict[str, str], *, default_backend: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ingressClassName": "pyngress",
        "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                                       "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
    }
    if default_backend:
        spec["defaultBackend"] = {"service": {"name": "web", "port": {"number": 80}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "site", "namespace": "shop", "annotations": annotations}, "spec": spec}


def configmap(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pyngress", "namespace": "shop"},
            "data": data}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"ports": [{"port": 80}]}}


def compiled(*manifests: dict[str, Any]) -> Snapshot:
    objects: list[KubeObject] = []
    for manifest in (SERVICE, *manifests):
        obj, problems = parse_manifest(manifest, "test.yaml")
        assert obj is not None and not problems
        objects.append(obj)
    return compile_snapshot(objects, CompileOptions())


def test_no_annotation_is_round_robin() -> None:
    snap = compiled(ingress({}))
    assert snap.routes[0].balance == DEFAULT_BALANCE
    assert snap.routes[0].balancer_key == snap.routes[0].backend.key


@pytest.mark.parametrize("prefix", ["pyngress.io/", "nginx.ingress.kubernetes.io/"])
def test_load_balance_under_either_prefix(prefix: str) -> None:
    snap = compiled(ingress({prefix + "load-balance": "least_conn"}))
    assert snap.routes[0].balance.algorithm == "least_conn"
    assert snap.problems == ()


def test_ours_wins_over_nginx_and_the_other_is_a_warning() -> None:
    snap = compiled(ingress({"pyngress.io/load-balance": "p2c",
                             "nginx.ingress.kubernetes.io/load-balance": "ewma"}))
    assert snap.routes[0].balance.algorithm == "p2c"
    [problem] = snap.problems
    assert problem.severity == "warning"
    assert problem.field == "metadata.annotations[nginx.ingress.kubernetes.io/load-balance]"


def test_unknown_algorithm_is_an_error_and_keeps_the_default() -> None:
    snap = compiled(ingress({"nginx.ingress.kubernetes.io/load-balance": "fastest"}))
    assert snap.routes[0].balance.algorithm == "round_robin"
    [problem] = snap.problems
    assert problem.severity == "error"
    assert "'fastest' is not one of" in problem.message
    assert str(problem).startswith("test.yaml: Ingress shop/site: metadata.annotations[")


def test_configmap_load_balance_is_the_default_for_every_route() -> None:
    snap = compiled(ingress({}), configmap({"load-balance": "ewma"}))
    assert snap.routes[0].balance.algorithm == "ewma"
    assert compiled(ingress({"pyngress.io/load-balance": "random"}),
                    configmap({"load-balance": "ewma"})).routes[0].balance.algorithm == "random"


def test_upstream_hash_by_with_algorithm_and_subsets() -> None:
    snap = compiled(ingress({
        "nginx.ingress.kubernetes.io/upstream-hash-by": "$http_x_user",
        "pyngress.io/hash-algorithm": "maglev",
        "nginx.ingress.kubernetes.io/upstream-hash-by-subset": "true",
        "nginx.ingress.kubernetes.io/upstream-hash-by-subset-size": "2",
    }))
    assert snap.routes[0].balance == BalanceSpec(hash_by="$http_x_user", hash_algorithm="maglev", subset_size=2)
    assert snap.problems == ()


def test_subset_size_without_subset_is_ignored() -> None:
    snap = compiled(ingress({"pyngress.io/upstream-hash-by": "$remote_addr",
                             "pyngress.io/upstream-hash-by-subset-size": "5"}))
    assert snap.routes[0].balance.subset_size == 0


def test_bad_hash_template_is_an_error_and_no_hashing() -> None:
    snap = compiled(ingress({"pyngress.io/upstream-hash-by": "$no_such_variable"}))
    assert snap.routes[0].balance.hash_by == ""
    [problem] = snap.problems
    assert problem.field == "metadata.annotations[pyngress.io/upstream-hash-by]"
    assert "no_such_variable" in problem.message


def test_default_backend_is_balanced_as_its_ingress_asks() -> None:
    snap = compiled(ingress({"pyngress.io/load-balance": "least_conn"}, default_backend=True))
    assert snap.default_balance.algorithm == "least_conn"


def test_check_shows_the_balancing_of_each_route() -> None:
    snap = compiled(ingress({"pyngress.io/upstream-hash-by": "$remote_addr"}))
    assert "hash $remote_addr (ring)" in format_check(snap)


def test_same_backend_balanced_two_ways_gets_two_balancer_keys() -> None:
    a = compiled(ingress({})).routes[0]
    b = compiled(ingress({"pyngress.io/load-balance": "random"})).routes[0]
    assert a.backend == b.backend
    assert a.balancer_key != b.balancer_key


def test_cookie_affinity_from_nginx_annotations() -> None:
    n = "nginx.ingress.kubernetes.io/"
    snap = compiled(ingress({
        n + "affinity": "cookie", n + "session-cookie-name": "route", n + "session-cookie-samesite": "lax",
        n + "session-cookie-max-age": "172800", n + "session-cookie-secure": "true",
        n + "session-cookie-change-on-failure": "true",
    }), configmap({"session-cookie-salt": "shared-secret"}))
    affinity = snap.routes[0].affinity
    assert (affinity.kind, affinity.mode, affinity.cookie_name, affinity.samesite, affinity.max_age) == (
        "cookie", "persistent", "route", "Lax", 172800)
    assert affinity.secure and affinity.change_on_failure and affinity.salt == "shared-secret"
    assert snap.problems == ()
    assert "cookie route (persistent)" in format_check(snap)


def test_cookie_affinity_without_a_salt_warns() -> None:
    snap = compiled(ingress({"pyngress.io/affinity": "cookie"}))
    assert snap.routes[0].affinity.salt == "pyngress:shop/site"
    [problem] = snap.problems
    assert problem.severity == "warning" and "session-cookie-salt" in problem.message


@pytest.mark.parametrize(("name", "value"), [("session-cookie-samesite", "Sometimes"),
                                             ("session-cookie-name", "bad name"),
                                             ("session-cookie-path", "relative"),
                                             ("session-cookie-max-age", "-5"),
                                             ("affinity-mode", "sticky")])
def test_bad_cookie_settings_are_errors(name: str, value: str) -> None:
    snap = compiled(ingress({"pyngress.io/affinity": "cookie", "pyngress.io/" + name: value}),
                    configmap({"session-cookie-salt": "s"}))
    errors = [p.field for p in snap.problems if p.severity == "error"]
    assert errors == [f"metadata.annotations[pyngress.io/{name}]"]
    assert snap.routes[0].affinity.kind == "cookie"


def test_service_client_ip_affinity_applies_to_its_routes() -> None:
    service = {**SERVICE, "spec": {"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
                                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}}
    objects = []
    for manifest in (service, ingress({})):
        obj, _ = parse_manifest(manifest, "test.yaml")
        assert obj is not None
        objects.append(obj)
    snap = compile_snapshot(objects, CompileOptions())
    assert (snap.routes[0].affinity.kind, snap.routes[0].affinity.timeout) == ("client-ip", 600.0)


def test_client_ip_affinity_annotation_with_timeout() -> None:
    snap = compiled(ingress({"pyngress.io/affinity": "client-ip", "pyngress.io/client-ip-timeout": "30"}))
    assert (snap.routes[0].affinity.kind, snap.routes[0].affinity.timeout) == ("client-ip", 30.0)
