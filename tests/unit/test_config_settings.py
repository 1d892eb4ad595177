"""parse_settings: ingress-nginx ConfigMap keys -> ProxySettings; bad values keep defaults with a Problem."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from pyngress.config import parse_settings
from pyngress.model import ConfigMap, Meta, ProxySettings


def cm(**data: str) -> ConfigMap:
    return ConfigMap(Meta("pyngress", "ingress", source="cm.yaml"), MappingProxyType(dict(data)))


def settings(**data: str) -> ProxySettings:
    parsed, problems = parse_settings(cm(**data))
    assert problems == []
    return parsed


def test_no_configmap_gives_defaults() -> None:
    assert parse_settings(None) == (ProxySettings(), [])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5", 5.0), ("5s", 5.0), ("0.5", 0.5), ("1m", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0),
     (" 7 ", 7.0), ("0", 0.0)],
)
def test_durations_accept_seconds_fractions_and_nginx_units(text: str, seconds: float) -> None:
    assert settings(**{"proxy-read-timeout": text}).proxy_read_timeout == seconds


def test_every_supported_key_sets_its_field() -> None:
    s = settings(**{
        "proxy-connect-timeout": "2", "proxy-read-timeout": "3", "proxy-send-timeout": "4", "keep-alive": "5",
        "keep-alive-requests": "6", "client-header-timeout": "7", "client-body-timeout": "8",
        "upstream-keepalive-connections": "9", "upstream-keepalive-timeout": "10",
        "upstream-keepalive-requests": "11", "use-forwarded-headers": "true",
        "proxy-real-ip-cidr": "10.0.0.0/8, 192.168.1.7 ,2001:db8::/32", "forwarded-for-header": "X-Real-IP",
        "generate-request-id": "false", "large-client-header-buffers": "8 16k",
    })
    assert s == ProxySettings(
        proxy_connect_timeout=2, proxy_read_timeout=3, proxy_send_timeout=4, keep_alive=5, keep_alive_requests=6,
        client_header_timeout=7, client_body_timeout=8, upstream_keepalive_connections=9,
        upstream_keepalive_timeout=10, upstream_keepalive_requests=11, use_forwarded_headers=True,
        trusted_proxies=("10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"), forwarded_for_header="X-Real-IP",
        generate_request_id=False, header_buffer_count=8, header_buffer_size=16384,
    )


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("1", True), ("f", False)])
def test_booleans_as_go_parses_them(text: str, value: bool) -> None:
    assert settings(**{"generate-request-id": text}).generate_request_id is value


def test_forwarded_headers_trusted_from_everyone_is_a_warning() -> None:
    parsed, problems = parse_settings(cm(**{"use-forwarded-headers": "true"}))
    assert parsed.use_forwarded_headers is True
    assert [(p.field, p.severity) for p in problems] == [("data.use-forwarded-headers", "warning")]
    assert "proxy-real-ip-cidr" in problems[0].message


def test_forwarded_headers_with_trusted_cidrs_is_no_problem() -> None:
    assert settings(**{"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8"}).trusted_proxies


def test_cidr_host_bits_are_cleared() -> None:
    assert settings(**{"proxy-real-ip-cidr": "10.1.2.3/8"}).trusted_proxies == ("10.0.0.0/8",)


def test_header_buffers_with_megabyte_suffix() -> None:
    s = settings(**{"large-client-header-buffers": "2 1m"})
    assert (s.header_buffer_count, s.header_buffer_size, s.max_head_size) == (2, 1048576, 2097152)


@pytest.mark.parametrize(
    ("key", "text", "words"),
    [
        ("proxy-read-timeout", "soon", "not a duration"),
        ("proxy-read-timeout", "-1", "not a duration"),
        ("keep-alive", "5x", "not a duration"),
        ("keep-alive-requests", "many", "whole number"),
        ("keep-alive-requests", "-3", "whole number"),
        ("use-forwarded-headers", "yes", "not a boolean"),
        ("proxy-real-ip-cidr", "10.0.0.0/8,10.0.0.300", "'10.0.0.300'"),
        ("forwarded-for-header", "X Forwarded", "not a header name"),
        ("large-client-header-buffers", "4", "'<count> <size>'"),
        ("large-client-header-buffers", "4 8q", "not a size"),
        ("large-client-header-buffers", "0 8k", "out of range"),
        ("large-client-header-buffers", "4 100", "out of range"),
    ],
)
def test_bad_value_is_a_problem_and_keeps_the_default(key: str, text: str, words: str) -> None:
    parsed, problems = parse_settings(cm(**{key: text, "proxy-connect-timeout": "9"}))
    assert parsed == ProxySettings(proxy_connect_timeout=9)  # the good key still applies
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.kind, problem.namespace, problem.name, problem.field) == (
        "ConfigMap", "ingress", "pyngress", f"data.{key}"
    )
    assert words in problem.message and "keeping the default" in problem.message
    assert problem.source == "cm.yaml"


def test_default_is_named_in_the_problem() -> None:
    _, problems = parse_settings(cm(**{"proxy-read-timeout": "x", "large-client-header-buffers": "y"}))
    assert problems[0].message.endswith("keeping the default (60s)")
    assert problems[1].message.endswith("keeping the default (4 8k)")


def test_unknown_keys_are_ignored_without_problems() -> None:
    assert parse_settings(cm(**{"enable-brotli": "true", "enable-opentracing": "true"})) == (ProxySettings(), [])
