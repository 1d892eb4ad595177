"""Health-check, slow-start and retry annotations (issue 7), read under both prefixes like every annotation.

Active checks are opt-in, per Service or per Ingress (`pyngress.io/health-check-path` or
`pyngress.io/health-check-tcp: "true"` switches them on):

| annotation | default | meaning |
|---|---|---|
| `health-check-path` | (off) | HTTP GET target of the probe, e.g. `/healthz` |
| `health-check-tcp` | false | a connect check instead of an HTTP GET |
| `health-check-interval` | 5s | between two probes of one endpoint (jittered +-15 %) |
| `health-check-timeout` | 2s | a probe not answered within it fails |
| `health-check-healthy-threshold` | 2 | consecutive passes to come back |
| `health-check-unhealthy-threshold` | 3 | consecutive failures to be taken out |
| `health-check-expected-status` | 200-399 | passing statuses: `200`, `200-299`, `200,204,300-399` |
| `slow-start` | 0 (off) | seconds over which a new or recovered endpoint's weight ramps up linearly |

Where both the Service and an Ingress set them, the Service wins (it describes its pods); among Ingresses
routing to one Service, the oldest wins and the others get a warning. Retry annotations are per Ingress:
`proxy-next-upstream`, `proxy-next-upstream-tries`, `proxy-next-upstream-timeout` and
`client-body-buffer-size` (the body kept for a replay), defaulting to the ConfigMap's keys.
"""

from __future__ import annotations

from pyngress.config.annotations import Annotations
from pyngress.config.health import parse_next_upstream, retry_policy
from pyngress.config.settings import parse_bool, parse_count, parse_duration, parse_size
from pyngress.model import ActiveCheck, HealthSpec, Ingress, Problem, ProxySettings, RetryPolicy, Service

HEALTH_NAMES = ("health-check-path", "health-check-tcp", "health-check-interval", "health-check-timeout",
                "health-check-healthy-threshold", "health-check-unhealthy-threshold",
                "health-check-expected-status", "slow-start")


def health_spec(obj: Ingress | Service) -> tuple[HealthSpec | None, list[Problem]]:
    """The HealthSpec `obj`'s annotations ask for; None when they set none of the health annotations."""
    notes = Annotations(obj)
    if not any(notes.get(name) for name in HEALTH_NAMES):
        return None, notes.problems
    slow_start = float(notes.parsed("slow-start", "0", lambda v: str(_seconds(v, allow_zero=True))))
    path = notes.parsed("health-check-path", "", _path)
    tcp = notes.parsed("health-check-tcp", "false", lambda v: str(parse_bool(v)).lower()) == "true"
    if not path and not tcp:
        return HealthSpec(slow_start=slow_start), notes.problems
    check = ActiveCheck(
        path=path or "/",
        tcp=tcp,
        interval=float(notes.parsed("health-check-interval", "5", lambda v: str(_seconds(v)))),
        timeout=float(notes.parsed("health-check-timeout", "2", lambda v: str(_seconds(v)))),
        healthy_threshold=int(notes.parsed("health-check-healthy-threshold", "2", _threshold)),
        unhealthy_threshold=int(notes.parsed("health-check-unhealthy-threshold", "3", _threshold)),
        expected=parse_statuses(notes.parsed("health-check-expected-status", "200-399", _statuses_text)),
    )
    return HealthSpec(active=check, slow_start=slow_start), notes.problems


def ingress_retry(ingress: Ingress, settings: ProxySettings) -> tuple[RetryPolicy, list[Problem]]:
    notes = Annotations(ingress)
    words = notes.parsed("proxy-next-upstream", settings.proxy_next_upstream, parse_next_upstream)
    tries = int(notes.parsed("proxy-next-upstream-tries", str(settings.proxy_next_upstream_tries),
                             lambda v: str(parse_count(v))))
    timeout = float(notes.parsed("proxy-next-upstream-timeout", str(settings.proxy_next_upstream_timeout),
                                 lambda v: str(parse_duration(v))))
    buffer = int(notes.parsed("client-body-buffer-size", str(settings.client_body_buffer_size),
                              lambda v: str(parse_size(v))))
    return retry_policy(words, tries, timeout, buffer), notes.problems


def parse_statuses(text: str) -> tuple[tuple[int, int], ...]:
    """"200-399" / "200,204" / "200-299,404" -> inclusive ranges. Raises ValueError."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"{text!r} is not a status list like 200-399 or 200,204")
        lo, hi = int(low), int(high or low)
        if not 100 <= lo <= hi <= 599:
            raise ValueError(f"{text!r}: statuses are 100 to 599, low before high")
        ranges.append((lo, hi))
    if not ranges:
        raise ValueError("no status given")
    return tuple(ranges)


def _statuses_text(value: str) -> str:
    parse_statuses(value)
    return value


def _seconds(value: str, *, allow_zero: bool = False) -> float:
    seconds = parse_duration(value)
    if seconds <= 0 and not (allow_zero and seconds == 0):
        raise ValueError(f"{value!r} must be more than 0 seconds")
    return seconds


def _threshold(value: str) -> str:
    count = parse_count(value)
    if not 1 <= count <= 100:
        raise ValueError(f"{value!r} is not a whole number from 1 to 100")
    return str(count)


def _path(value: str) -> str:
    path = value.strip()
    if not path.startswith("/") or any(c in path for c in " \r\n\t"):
        raise ValueError(f"{value!r} is not a request path (starts with /, no spaces)")
    return path
