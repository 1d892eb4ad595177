"""The controller ConfigMap -> `ProxySettings`: `parse_settings(cm) -> (settings, problems)`.

Keys are ingress-nginx's ConfigMap keys, so an existing ConfigMap keeps working. Each key is parsed on its own:
a bad value is one Problem (field `data.<key>`) and that setting keeps its default; the other keys still apply.
Unknown keys are ignored without a warning: ingress-nginx has hundreds, and a ConfigMap written for it must
not drown `pyngress check` in noise (later releases read more of them).

Value syntax:
- durations: seconds, fractions allowed ("5", "0.5", "5s"), and nginx time units ms/s/m/h/d, alone or
  combined ("1m", "1m30s", "500ms");
- booleans: what ingress-nginx accepts (Go's strconv.ParseBool): true/false, True/False, TRUE/FALSE, t/f, 1/0;
- proxy-real-ip-cidr: comma-separated IPv4/IPv6 networks or addresses ("10.0.0.0/8, ::1"); host bits are
  allowed and cleared ("10.1.2.3/8" is 10.0.0.0/8), since nginx's set_real_ip_from does the same;
- large-client-header-buffers: "<count> <size>", size in bytes or with a k/m suffix ("4 8k"). We bound count
  to 1-64 and size to 1k-1m: smaller cannot hold an ordinary request head, larger only helps an attacker.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pyngress.config.health import health_keys
from pyngress.config.tls_values import (
    parse_max_age,
    parse_ssl_ciphers,
    parse_ssl_protocols,
    ssl_protocol_warnings,
)
from pyngress.model import ALGORITHMS, ConfigMap, Problem, ProxySettings
from pyngress.observability.logformat import check_log_format

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a header name
_TRUE = {"true", "True", "TRUE", "t", "T", "1"}
_FALSE = {"false", "False", "FALSE", "f", "F", "0"}
_SIZE = re.compile(r"(\d+)([kKmM]?)")


def parse_duration(text: str) -> float:
    """nginx-style duration -> seconds. Raises ValueError with a message for the user."""
    text = text.strip()
    parts = list(_DURATION_PART.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        raise ValueError(f"{text!r} is not a duration (seconds, or with a unit: 500ms, 5s, 1m, 1h)")
    return sum(float(p.group(1)) * _UNIT_SECONDS[p.group(2)] for p in parts)


def parse_bool(text: str) -> bool:
    if text.strip() in _TRUE:
        return True
    if text.strip() in _FALSE:
        return False
    raise ValueError(f'{text!r} is not a boolean ("true" or "false")')


def parse_count(text: str) -> int:
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise ValueError(f"{text!r} is not a whole number >= 0")
    return int(text)


def parse_cidrs(text: str) -> tuple[str, ...]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 or IPv6 address or CIDR network") from None
    return tuple(out)


def parse_algorithm(text: str) -> str:
    value = text.strip().lower()
    if value not in ALGORITHMS:
        raise ValueError(f"{text!r} is not one of {', '.join(ALGORITHMS)}")
    return value


def parse_header_name(text: str) -> str:
    if not _TOKEN.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a header name")
    return text.strip()


def parse_size(text: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (bytes, or with k/m: 8k)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def parse_header_buffers(text: str) -> tuple[int, int]:
    fields = text.split()
    if len(fields) != 2 or not (fields[0].isascii() and fields[0].isdigit()):
        raise ValueError(f"{text!r} is not '<count> <size>', as in '4 8k'")
    count, size = int(fields[0]), parse_size(fields[1])
    if not 1 <= count <= 64 or not 1024 <= size <= 1024 * 1024:
        raise ValueError(f"{text!r} is out of range: count 1-64, size 1k-1m")
    return count, size


# -- flow and access control (issue 5) --------------------------------------------------------------------
_BODY_SIZE = re.compile(r"(\d+)([kKmMgG]?)")


def parse_body_size(text: str) -> int:
    """proxy-body-size: bytes, or with k/m/g as nginx's client_max_body_size ("8m", "1g"); 0 is unlimited."""
    m = _BODY_SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (bytes, or with k/m/g: 8m; 0 for unlimited)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def parse_status(text: str) -> int:
    """A refusal status: 400..599 (429 and 503 are the usual ones)."""
    if not (text.strip().isascii() and text.strip().isdigit()) or not 400 <= int(text) <= 599:
        raise ValueError(f"{text!r} is not an HTTP status from 400 to 599")
    return int(text)


def parse_table_size(text: str) -> int:
    size = parse_count(text)
    if not 1 <= size <= 1 << 24:
        raise ValueError(f"{text!r} is out of range: 1 to 16777216 entries")
    return size


def parse_patterns(text: str) -> tuple[str, ...]:
    """block-user-agents / block-referers: comma-separated; "~regex" (case-sensitive), "~*regex", or exact."""
    from pyngress.policy.access import check_pattern

    return tuple(check_pattern(p.strip()) for p in text.split(",") if p.strip())


def _one(attr: str, parse: Callable[[str], Any]) -> Callable[[str], dict[str, Any]]:
    return lambda text: {attr: parse(text)}


def _buffers(text: str) -> dict[str, Any]:
    count, size = parse_header_buffers(text)
    return {"header_buffer_count": count, "header_buffer_size": size}


# ConfigMap key -> function from its text to the ProxySettings fields it sets
_KEYS: dict[str, Callable[[str], dict[str, Any]]] = {
    "proxy-connect-timeout": _one("proxy_connect_timeout", parse_duration),
    "proxy-read-timeout": _one("proxy_read_timeout", parse_duration),
    "proxy-send-timeout": _one("proxy_send_timeout", parse_duration),
    "keep-alive": _one("keep_alive", parse_duration),
    "keep-alive-requests": _one("keep_alive_requests", parse_count),
    "client-header-timeout": _one("client_header_timeout", parse_duration),
    "client-body-timeout": _one("client_body_timeout", parse_duration),
    "upstream-keepalive-connections": _one("upstream_keepalive_connections", parse_count),
    "upstream-keepalive-timeout": _one("upstream_keepalive_timeout", parse_duration),
    "upstream-keepalive-requests": _one("upstream_keepalive_requests", parse_count),
    "use-forwarded-headers": _one("use_forwarded_headers", parse_bool),
    "proxy-real-ip-cidr": _one("trusted_proxies", parse_cidrs),
    "forwarded-for-header": _one("forwarded_for_header", parse_header_name),
    "generate-request-id": _one("generate_request_id", parse_bool),
    "enable-underscores-in-headers": _one("enable_underscores_in_headers", parse_bool),
    "large-client-header-buffers": _buffers,
    "load-balance": _one("load_balance", parse_algorithm),
    "session-cookie-salt": _one("session_cookie_salt", str.strip),
    "affinity-table-size": _one("affinity_table_size", parse_count),
    # access log (issue 8)
    "enable-access-log": _one("enable_access_log", parse_bool),
    "disable-access-log": lambda text: {"enable_access_log": not parse_bool(text)},
    "log-format-upstream": _one("log_format_upstream", check_log_format),
    "log-format-escape-json": _one("log_format_escape_json", parse_bool),
    # issue 9 (L4 streams)
    "proxy-stream-timeout": _one("proxy_stream_timeout", parse_duration),
    "proxy-stream-next-upstream": _one("proxy_stream_next_upstream", parse_bool),
    "proxy-stream-next-upstream-tries": _one("proxy_stream_next_upstream_tries", parse_count),
    "proxy-stream-next-upstream-timeout": _one("proxy_stream_next_upstream_timeout", parse_duration),
    "proxy-stream-responses": _one("proxy_stream_responses", parse_count),
    "proxy-protocol-header-timeout": _one("proxy_protocol_header_timeout", parse_duration),
    "udp-flow-timeout": _one("udp_flow_timeout", parse_duration),
    "udp-flow-table-size": _one("udp_flow_table_size", parse_count),
    # TLS and HTTPS (issue 4; parsers in config.tls_values)
    "ssl-protocols": _one("ssl_protocols", parse_ssl_protocols),
    "ssl-ciphers": _one("ssl_ciphers", parse_ssl_ciphers),
    "ssl-redirect": _one("ssl_redirect", parse_bool),
    "force-ssl-redirect": _one("force_ssl_redirect", parse_bool),
    "hsts": _one("hsts", parse_bool),
    "hsts-max-age": _one("hsts_max_age", parse_max_age),
    "hsts-include-subdomains": _one("hsts_include_subdomains", parse_bool),
    "hsts-preload": _one("hsts_preload", parse_bool),
    # issue 4
    "http2-max-concurrent-streams": _one("http2_max_concurrent_streams", parse_count),
    # flow and access control (issue 5)
    "use-proxy-protocol": _one("use_proxy_protocol", parse_bool),
    "proxy-body-size": _one("proxy_body_size", parse_body_size),
    "limit-req-status-code": _one("limit_req_status_code", parse_status),
    "limit-conn-status-code": _one("limit_conn_status_code", parse_status),
    "global-rate-limit-status-code": _one("global_rate_limit_status_code", parse_status),
    "global-rate-limit-fail-closed": _one("global_rate_limit_fail_closed", parse_bool),
    "limit-table-size": _one("limit_table_size", parse_table_size),
    "whitelist-source-range": _one("whitelist_source_range", parse_cidrs),
    "denylist-source-range": _one("denylist_source_range", parse_cidrs),
    "block-cidrs": _one("block_cidrs", parse_cidrs),
    "block-user-agents": _one("block_user_agents", parse_patterns),
    "block-referers": _one("block_referers", parse_patterns),
    # issue 7: retries, outlier ejection, draining (parsers in config.health)
    **health_keys(),
}


def parse_settings(cm: ConfigMap | None) -> tuple[ProxySettings, list[Problem]]:
    """Settings from `cm` (None: all defaults). Never raises; see the module docstring."""
    defaults = ProxySettings()
    if cm is None:
        return defaults, []
    values: dict[str, Any] = {}
    problems = []
    for key, parse in _KEYS.items():
        if key not in cm.data:
            continue
        try:
            values.update(parse(cm.data[key]))
        except ValueError as e:
            message = f"{e}; keeping the default ({_describe_default(key, defaults)})"
            problems.append(
                Problem("ConfigMap", cm.meta.namespace, cm.meta.name, f"data.{key}", message, cm.meta.source)
            )
    settings = replace(defaults, **values)
    # issue 4: ssl-protocols versions ingress-nginx accepts but we do not serve are dropped with a warning
    problems += [Problem("ConfigMap", cm.meta.namespace, cm.meta.name, "data.ssl-protocols", message,
                         cm.meta.source, severity="warning")
                 for message in ssl_protocol_warnings(cm.data.get("ssl-protocols", ""))]
    if settings.use_forwarded_headers and not settings.trusted_proxies:
        problems.append(Problem(
            "ConfigMap", cm.meta.namespace, cm.meta.name, "data.use-forwarded-headers",
            "X-Forwarded-* headers are trusted from every client (as ingress-nginx does); list your load "
            "balancers in proxy-real-ip-cidr so clients cannot choose their own address", cm.meta.source,
            severity="warning"))
    return settings, problems


def _describe_default(key: str, defaults: ProxySettings) -> str:
    if key == "large-client-header-buffers":
        return f"{defaults.header_buffer_count} {defaults.header_buffer_size // 1024}k"
    if key == "disable-access-log":
        return "false"
    attr = key.replace("-", "_").replace("proxy_real_ip_cidr", "trusted_proxies")
    value = getattr(defaults, attr)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s"
    return ", ".join(value) or "none" if isinstance(value, tuple) else str(value)
