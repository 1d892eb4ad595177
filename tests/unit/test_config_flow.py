"""Flow and access control from annotations (both prefixes) and the ConfigMap: values, defaults, problems."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from pyngress.config import CompileOptions, compile_snapshot, format_check, parse_manifest, parse_settings
from pyngress.model import ConfigMap, KubeObject, Meta, Snapshot
from pyngress.model.flow import DEFAULT_BODY_SIZE, GlobalLimitSpec, RateSpec

NGINX = "nginx.ingress.kubernetes.io/"
OURS = "pyngress.io/"


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


def test_route_without_annotations_has_no_flow_and_the_default_body_size() -> None:
    route = compiled(ingress({})).routes[0]
    assert route.flow is None
    assert route.max_body == DEFAULT_BODY_SIZE == 1 << 20


@pytest.mark.parametrize("prefix", [OURS, NGINX])
def test_rate_limits_with_the_burst_multiplier(prefix: str) -> None:
    snap = compiled(ingress({prefix + "limit-rps": "10", prefix + "limit-rpm": "300",
                             prefix + "limit-burst-multiplier": "3"}))
    flow = snap.routes[0].flow
    assert flow is not None and not snap.problems
    assert flow.rates == (RateSpec(10.0, 30, "10 r/s"), RateSpec(5.0, 900, "300 r/m"))
    assert flow.owner == "shop/site" and flow.req_status == 429


def test_default_burst_multiplier_is_five() -> None:
    flow = compiled(ingress({NGINX + "limit-rps": "2"})).routes[0].flow
    assert flow is not None and flow.rates[0].burst == 10


def test_ours_wins_over_nginx_prefix() -> None:
    snap = compiled(ingress({NGINX + "limit-rps": "2", OURS + "limit-rps": "7"}))
    flow = snap.routes[0].flow
    assert flow is not None and flow.rates[0].rate == 7.0
    assert [p.severity for p in snap.problems] == ["warning"]


def test_connections_exemptions_and_access_lists() -> None:
    flow = compiled(ingress({
        NGINX + "limit-connections": "4",
        NGINX + "limit-whitelist": "10.0.0.0/8, ::1",
        NGINX + "whitelist-source-range": "192.168.0.0/16,2001:db8::/32",
        NGINX + "denylist-source-range": "192.168.6.0/24",
    })).routes[0].flow
    assert flow is not None
    assert flow.connections == 4
    assert flow.exempt == ("10.0.0.0/8", "::1/128")
    assert flow.allow == ("192.168.0.0/16", "2001:db8::/32")
    assert flow.deny == ("192.168.6.0/24",)


def test_allowlist_names_limit_allowlist_and_allowlist_source_range() -> None:
    flow = compiled(ingress({OURS + "limit-allowlist": "10.0.0.1", OURS + "allowlist-source-range": "::1"})
                    ).routes[0].flow
    assert flow is not None and flow.exempt == ("10.0.0.1/32",) and flow.allow == ("::1/128",)


def test_annotation_overrides_configmap_lists_and_block_lists_always_apply() -> None:
    cm = configmap({"whitelist-source-range": "10.0.0.0/8", "denylist-source-range": "10.9.0.0/16",
                    "block-cidrs": "6.6.6.0/24", "block-user-agents": "~*bot,curl/7.0",
                    "block-referers": "~spam", "limit-req-status-code": "503", "limit-conn-status-code": "503"})
    plain = compiled(ingress({}), cm).routes[0].flow
    assert plain is not None
    assert (plain.allow, plain.deny, plain.block_cidrs) == (("10.0.0.0/8",), ("10.9.0.0/16",), ("6.6.6.0/24",))
    assert plain.block_user_agents == ("~*bot", "curl/7.0") and plain.block_referers == ("~spam",)
    own = compiled(ingress({NGINX + "whitelist-source-range": "::1", NGINX + "denylist-source-range": "::2"}),
                   cm).routes[0].flow
    assert own is not None and own.allow == ("::1/128",) and own.deny == ("::2/128",)
    assert own.block_cidrs == ("6.6.6.0/24",) and (own.req_status, own.conn_status) == (503, 503)


@pytest.mark.parametrize(("value", "size"), [("0", 0), ("8m", 8 << 20), ("512k", 512 << 10), ("1g", 1 << 30),
                                             ("100", 100)])
def test_proxy_body_size(value: str, size: int) -> None:
    assert compiled(ingress({NGINX + "proxy-body-size": value})).routes[0].max_body == size


def test_configmap_body_size_is_the_default_and_the_annotation_wins() -> None:
    cm = configmap({"proxy-body-size": "2m"})
    assert compiled(ingress({}), cm).routes[0].max_body == 2 << 20
    assert compiled(ingress({NGINX + "proxy-body-size": "3m"}), cm).routes[0].max_body == 3 << 20


def test_global_limit() -> None:
    flow = compiled(ingress({NGINX + "global-rate-limit": "100", NGINX + "global-rate-limit-window": "1m",
                             NGINX + "global-rate-limit-key": "$http_x_api_client",
                             NGINX + "global-rate-limit-ignored-cidrs": "10.0.0.0/8",
                             OURS + "global-rate-limit-batch": "5"})).routes[0].flow
    assert flow is not None
    assert flow.global_limit == GlobalLimitSpec(100, 60.0, "$http_x_api_client", ("10.0.0.0/8",), 5)


def test_default_backend_route_gets_the_flow_of_its_ingress() -> None:
    snap = compiled(ingress({NGINX + "limit-rps": "3", NGINX + "proxy-body-size": "5k"}, default_backend=True))
    assert snap.default_flow is not None and snap.default_flow.rates[0].rate == 3.0
    assert snap.default_max_body == 5 << 10


@pytest.mark.parametrize(("name", "value", "message"), [
    ("limit-rps", "-1", "whole number"),
    ("limit-rpm", "ten", "whole number"),
    ("limit-connections", "1.5", "whole number"),
    ("limit-burst-multiplier", "0", "at least 1"),
    ("limit-whitelist", "10.0.0.0/33", "CIDR"),
    ("whitelist-source-range", "10.0.0.300", "CIDR"),
    ("denylist-source-range", "nope", "CIDR"),
    ("proxy-body-size", "1t", "size"),
    ("global-rate-limit", "-5", "whole number"),
    ("global-rate-limit-key", "$nope", "nope"),
    ("proxy-protocol", "v3", "v1, v2 or off"),
])
def test_bad_values_are_problems_naming_the_annotation_and_the_route_stays(name: str, value: str,
                                                                            message: str) -> None:
    annotations = {NGINX + name: value, NGINX + "limit-rps": "5"} if name != "limit-rps" else {NGINX + name: value}
    if name == "global-rate-limit-key":
        annotations |= {NGINX + "global-rate-limit": "10", NGINX + "global-rate-limit-window": "1s"}
    snap = compiled(ingress(annotations))
    assert len(snap.routes) == 1
    errors = [p for p in snap.problems if p.severity == "error"]
    assert len(errors) == 1, snap.problems
    assert errors[0].field == f"metadata.annotations[{NGINX}{name}]"
    assert (errors[0].kind, errors[0].namespace, errors[0].name) == ("Ingress", "shop", "site")
    assert message in errors[0].message
    assert "ignored" in errors[0].message
    shown = format_check(snap)
    assert f"{NGINX}{name}" in shown


def test_global_limit_without_window_is_a_problem_and_ignored() -> None:
    snap = compiled(ingress({NGINX + "global-rate-limit": "10"}))
    assert snap.routes[0].flow is None
    assert any("global-rate-limit-window" in p.message for p in snap.problems)


def cm(**data: str) -> ConfigMap:
    return ConfigMap(Meta("pyngress", "ingress", source="cm.yaml"), MappingProxyType(dict(data)))


def test_configmap_keys() -> None:
    settings, problems = parse_settings(cm(**{
        "use-proxy-protocol": "true", "proxy-protocol-header-timeout": "2s", "limit-table-size": "1000",
        "global-rate-limit-status-code": "503", "global-rate-limit-fail-closed": "true"}))
    assert problems == []
    assert settings.use_proxy_protocol and settings.proxy_protocol_header_timeout == 2.0
    assert settings.limit_table_size == 1000
    assert settings.global_rate_limit_status_code == 503 and settings.global_rate_limit_fail_closed


@pytest.mark.parametrize(("key", "value"), [("limit-req-status-code", "200"), ("limit-conn-status-code", "x"),
                                            ("block-cidrs", "1.2.3"), ("block-user-agents", "~*(bad"),
                                            ("proxy-body-size", "-1"), ("limit-table-size", "0")])
def test_bad_configmap_values_keep_the_default(key: str, value: str) -> None:
    _, problems = parse_settings(cm(**{key: value}))
    assert [p.field for p in problems] == [f"data.{key}"]
    assert "keeping the default" in problems[0].message


def test_check_lists_the_limits_of_each_ingress() -> None:
    snap = compiled(ingress({NGINX + "limit-rps": "10", NGINX + "limit-connections": "3",
                             NGINX + "whitelist-source-range": "10.0.0.0/8"}))
    assert "limits: shop/site: 10 r/s burst 50, 3 conn, allowlist" in format_check(snap)
    assert "limits:" not in format_check(compiled(ingress({})))


@pytest.mark.parametrize(("value", "version"), [("v1", 1), ("V2", 2), ("2", 2), ("off", 0)])
def test_proxy_protocol_for_passthrough_pods(value: str, version: int) -> None:
    flow = compiled(ingress({OURS + "proxy-protocol": value})).routes[0].flow
    assert (flow.proxy_protocol if flow is not None else 0) == version
