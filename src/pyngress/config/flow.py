"""Flow and access control annotations -> `FlowSpec` (issue 5). ingress-nginx's names, both prefixes.

Per Ingress (defaults in brackets):
- `limit-rps`, `limit-rpm` [0: none]: per client address, token buckets with burst = limit x
  `limit-burst-multiplier` [5]; both apply when both are set;
- `limit-connections` [0: none]: requests in progress per client address;
- `limit-whitelist` (also `limit-allowlist`) [none]: CIDRs exempt from those limits;
- `whitelist-source-range` (also `allowlist-source-range`) [the ConfigMap's]: only these CIDRs (403);
- `denylist-source-range` [the ConfigMap's]: never these (403);
- `proxy-body-size` [the ConfigMap's, 1m]: larger request bodies get 413; 0 is unlimited;
- `global-rate-limit` [0: none] per `global-rate-limit-window` [required: a duration] per value of
  `global-rate-limit-key` [$remote_addr], counted in Redis; `global-rate-limit-ignored-cidrs` are not
  counted; `global-rate-limit-batch` (ours) [2 % of the limit, 1..100, growing for busy keys]: requests
  granted per Redis trip;
- `proxy-protocol` (ours) [off]: `v1` or `v2`, a PROXY protocol header naming the client sent first to the
  pod of an `ssl-passthrough` host.
The ConfigMap adds its status codes, `block-cidrs`, `block-user-agents`, `block-referers` to every route.

A value that does not parse is an error Problem naming the annotation; that setting is ignored (as if
absent) and the Ingress is still served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pyngress.config.annotations import Annotations
from pyngress.config.settings import parse_body_size, parse_cidrs, parse_count, parse_duration
from pyngress.model import Ingress, Problem, ProxySettings
from pyngress.model.flow import FlowSpec, GlobalLimitSpec, RateSpec

T = TypeVar("T")


def flow_spec(ingress: Ingress, settings: ProxySettings) -> tuple[FlowSpec | None, int, list[Problem]]:
    """The FlowSpec of every path of `ingress` (None: no limit, no access list), its proxy-body-size, and the
    problems of these annotations."""
    notes = Annotations(ingress)
    multiplier = _value(notes, "limit-burst-multiplier", 5, _at_least_one)
    rates = []
    rps = _value(notes, "limit-rps", 0, parse_count)
    if rps:
        rates.append(RateSpec(float(rps), rps * multiplier, f"{rps} r/s"))
    rpm = _value(notes, "limit-rpm", 0, parse_count)
    if rpm:
        rates.append(RateSpec(rpm / 60.0, rpm * multiplier, f"{rpm} r/m"))
    exempt: tuple[str, ...] = _first(notes, ("limit-allowlist", "limit-whitelist"), (), parse_cidrs)
    allow = _first(notes, ("allowlist-source-range", "whitelist-source-range"), settings.whitelist_source_range,
                   parse_cidrs)
    deny = _value(notes, "denylist-source-range", settings.denylist_source_range, parse_cidrs)
    body = _value(notes, "proxy-body-size", settings.proxy_body_size, parse_body_size)
    spec = FlowSpec(
        owner=ingress.meta.key,
        rates=tuple(rates),
        connections=_value(notes, "limit-connections", 0, parse_count),
        exempt=exempt,
        allow=allow,
        deny=deny,
        block_cidrs=settings.block_cidrs,
        block_user_agents=settings.block_user_agents,
        block_referers=settings.block_referers,
        req_status=settings.limit_req_status_code,
        conn_status=settings.limit_conn_status_code,
        global_limit=_global_limit(notes),
        global_status=settings.global_rate_limit_status_code,
        proxy_protocol=_value(notes, "proxy-protocol", 0, _proxy_protocol),
    )
    active = (spec.rates or spec.connections or spec.allow or spec.deny or spec.block_cidrs
              or spec.block_user_agents or spec.block_referers or spec.global_limit is not None
              or spec.proxy_protocol)
    return (spec if active else None), body, notes.problems


def _global_limit(notes: Annotations) -> GlobalLimitSpec | None:
    limit = _value(notes, "global-rate-limit", 0, parse_count)
    if not limit:
        return None
    window = _value(notes, "global-rate-limit-window", 0.0, _window)
    if not window:
        if notes.get("global-rate-limit-window") is None:
            key = f"{notes_prefix(notes)}global-rate-limit"
            notes._problem(key, "global-rate-limit needs global-rate-limit-window (a duration such as 1m); "
                                "the global limit is ignored")
        return None
    return GlobalLimitSpec(
        limit=limit,
        window=window,
        key=_value(notes, "global-rate-limit-key", "$remote_addr", _key_template),
        ignored=_value(notes, "global-rate-limit-ignored-cidrs", (), parse_cidrs),
        batch=_value(notes, "global-rate-limit-batch", 0, _at_least_one),
    )


def notes_prefix(notes: Annotations) -> str:
    found = notes.get("global-rate-limit")
    return found[0].removesuffix("global-rate-limit") if found else ""


def _value(notes: Annotations, name: str, default: T, parse: Callable[[str], T]) -> T:
    found = notes.get(name)
    if found is None:
        return default
    key, text = found
    try:
        return parse(text)
    except ValueError as exc:
        notes._problem(key, f"{exc}; ignored")
        return default


def _first(notes: Annotations, names: tuple[str, ...], default: T, parse: Callable[[str], T]) -> T:
    """The first of several names for one setting that is set (ingress-nginx renamed whitelist to allowlist)."""
    for name in names:
        if notes.get(name) is not None:
            return _value(notes, name, default, parse)
    return default


def _at_least_one(text: str) -> int:
    value = parse_count(text)
    if value < 1:
        raise ValueError(f"{text!r} is not a whole number of at least 1")
    return value


def _proxy_protocol(text: str) -> int:
    version = {"v1": 1, "1": 1, "v2": 2, "2": 2, "off": 0, "none": 0, "false": 0, "": 0}.get(text.strip().lower())
    if version is None:
        raise ValueError(f"{text!r} is not v1, v2 or off")
    return version


def _window(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def _key_template(text: str) -> str:
    from pyngress.balancing.hash_key import compile_hash_key  # pure; raises ValueError naming the variable

    template = text.strip()
    if not template:
        raise ValueError("empty key template")
    compile_hash_key(template)
    return template
