"""Health, retry and draining configuration: annotations (both prefixes), ConfigMap keys, precedence."""

from __future__ import annotations

from typing import Any

import pytest

from pyngress.config import CompileOptions, compile_snapshot, parse_manifest, parse_settings
from pyngress.config.health import default_retry
from pyngress.config.health_notes import parse_statuses
from pyngress.model import ActiveCheck, ConfigMap, HealthSpec, KubeObject, Meta, RetryPolicy, Snapshot


def ingress(name: str, service: str, created: str, **annotations: str) -> dict[str, Any]:
    path = {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "annotations": annotations},
            "spec": {"ingressClassName": "pyngress",
                     "rules": [{"host": f"{name}.com", "http": {"paths": [path]}}]}}


def service(name: str, **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"ports": [{"port": 80}]}}


def slice_(service: str, *conditions: dict[str, bool]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": [f"10.0.0.{i}"], "conditions": c} for i, c in enumerate(conditions, 1)]}


def compiled(*docs: dict[str, Any]) -> Snapshot:
    objects: list[KubeObject] = []
    for doc in docs:
        obj, problems = parse_manifest(doc)
        assert obj is not None and not problems
        objects.append(obj)
    return compile_snapshot(objects, CompileOptions())


def test_service_annotations_switch_the_active_check_on_with_defaults() -> None:
    snap = compiled(service("web", **{"pyngress.io/health-check-path": "/healthz"}), ingress("a", "web", "1"))
    assert snap.backends["default/web:80"].health == HealthSpec(active=ActiveCheck(path="/healthz"))
    assert snap.problems == ()


def test_every_health_annotation_under_the_nginx_prefix() -> None:
    p = "nginx.ingress.kubernetes.io/"
    snap = compiled(service("web"), ingress("a", "web", "1", **{
        p + "health-check-path": "/ready", p + "health-check-interval": "1500ms", p + "health-check-timeout": "1",
        p + "health-check-healthy-threshold": "4", p + "health-check-unhealthy-threshold": "5",
        p + "health-check-expected-status": "200-299,418", p + "slow-start": "30s"}))
    assert snap.backends["default/web:80"].health == HealthSpec(
        active=ActiveCheck("/ready", False, 1.5, 1.0, 4, 5, ((200, 299), (418, 418))), slow_start=30.0)


def test_tcp_check() -> None:
    snap = compiled(service("web", **{"pyngress.io/health-check-tcp": "true"}), ingress("a", "web", "1"))
    active = snap.backends["default/web:80"].health.active
    assert active is not None and active.tcp


def test_service_wins_over_ingress_and_oldest_ingress_wins_with_a_warning() -> None:
    snap = compiled(service("web", **{"pyngress.io/health-check-path": "/svc"}),
                    ingress("a", "web", "2", **{"pyngress.io/health-check-path": "/a"}))
    active = snap.backends["default/web:80"].health.active
    assert active is not None and active.path == "/svc"
    snap = compiled(service("web"), ingress("young", "web", "2", **{"pyngress.io/health-check-path": "/y"}),
                    ingress("old", "web", "1", **{"pyngress.io/health-check-path": "/o"}))
    active = snap.backends["default/web:80"].health.active
    assert active is not None and active.path == "/o"
    assert [p.name for p in snap.problems if p.severity == "warning"] == ["young"]
    assert all(r.backend.health.active == active for r in snap.routes)


@pytest.mark.parametrize(("name", "value"), [
    ("health-check-path", "healthz"), ("health-check-interval", "0"), ("health-check-timeout", "soon"),
    ("health-check-healthy-threshold", "0"), ("health-check-expected-status", "200-99"), ("slow-start", "-1"),
])
def test_bad_health_values_are_problems_and_keep_defaults(name: str, value: str) -> None:
    notes = {"pyngress.io/health-check-path": "/h", f"pyngress.io/{name}": value}
    snap = compiled(service("web", **notes), ingress("a", "web", "1"))
    assert [p.field for p in snap.problems] == [f"metadata.annotations[pyngress.io/{name}]"]
    assert snap.problems[0].kind == "Service"


def test_retry_annotations_per_ingress_and_configmap_defaults() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pyngress", "namespace": "default"},
          "data": {"proxy-next-upstream": "error timeout http_503", "proxy-next-upstream-tries": "2"}}
    snap = compiled(cm, service("web"), ingress("a", "web", "1"), ingress("b", "web", "2", **{
        "nginx.ingress.kubernetes.io/proxy-next-upstream": "error http_502 non_idempotent",
        "nginx.ingress.kubernetes.io/proxy-next-upstream-tries": "5",
        "nginx.ingress.kubernetes.io/proxy-next-upstream-timeout": "3s",
        "nginx.ingress.kubernetes.io/client-body-buffer-size": "64k"}))
    by_host = {r.host: r.retry for r in snap.routes}
    assert by_host["a.com"] == RetryPolicy(statuses=frozenset({503}), tries=2)
    assert by_host["b.com"] == RetryPolicy(on_timeout=False, statuses=frozenset({502}), non_idempotent=True,
                                           tries=5, timeout=3.0, body_buffer=65536)


def test_next_upstream_off_and_bad_words() -> None:
    snap = compiled(service("web"), ingress("a", "web", "1", **{"pyngress.io/proxy-next-upstream": "off"}))
    assert snap.routes[0].retry.off and snap.routes[0].retry.tries == 1
    snap = compiled(service("web"), ingress("a", "web", "1", **{"pyngress.io/proxy-next-upstream": "error bogus"}))
    assert snap.routes[0].retry == RetryPolicy() and len(snap.problems) == 1


def test_configmap_health_and_draining_keys() -> None:
    data = {"client-body-buffer-size": "16k", "retry-budget-percent": "10", "retry-budget-window": "30s",
            "retry-budget-min-retries": "0", "outlier-consecutive-failures": "3",
            "outlier-base-ejection-time": "10s", "outlier-max-ejection-time": "2m", "max-ejection-percent": "30",
            "worker-shutdown-timeout": "60s", "shutdown-grace-period": "0", "proxy-next-upstream-timeout": "1s"}
    settings, problems = parse_settings(ConfigMap(Meta("pyngress", "default"), data))
    assert problems == []
    assert (settings.client_body_buffer_size, settings.retry_budget_percent, settings.retry_budget_window,
            settings.retry_budget_min_retries, settings.outlier_consecutive_failures,
            settings.outlier_base_ejection_time, settings.outlier_max_ejection_time, settings.max_ejection_percent,
            settings.worker_shutdown_timeout, settings.shutdown_grace_period) == \
        (16384, 10.0, 30.0, 0, 3, 10.0, 120.0, 30, 60.0, 0.0)
    assert default_retry(settings).timeout == 1.0 and default_retry(settings).body_buffer == 16384


def test_bad_configmap_value_names_the_default() -> None:
    _, problems = parse_settings(ConfigMap(Meta("pyngress", "default"), {"max-ejection-percent": "150"}))
    assert len(problems) == 1 and "keeping the default (50)" in problems[0].message


def test_terminating_endpoints_are_kept_marked_and_not_ready_ones_dropped() -> None:
    snap = compiled(service("web"), ingress("a", "web", "1"), slice_(
        "web", {"ready": True}, {"ready": False, "serving": True, "terminating": True},
        {"ready": False, "serving": False, "terminating": True}, {"ready": False}))
    eps = snap.backends["default/web:80"].endpoints
    assert [(e.address, e.terminating) for e in eps] == [("10.0.0.1", False), ("10.0.0.2", True)]


def test_status_lists() -> None:
    assert parse_statuses("200-399") == ((200, 399),)
    assert parse_statuses("200, 204,300-302") == ((200, 200), (204, 204), (300, 302))
    for bad in ("", "2xx", "600", "300-200"):
        with pytest.raises(ValueError):
            parse_statuses(bad)


def test_check_report_lists_health_checks() -> None:
    from pyngress.config import format_check

    snap = compiled(service("web", **{"pyngress.io/health-check-tcp": "true", "pyngress.io/slow-start": "30"}),
                    ingress("a", "web", "1"))
    assert "health checks:\n  default/web:80: tcp every 5s, slow start 30s\n" in format_check(snap)
    assert "health checks" not in format_check(compiled(service("web"), ingress("a", "web", "1")))
