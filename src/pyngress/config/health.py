"""Value parsers for the health, retry and draining settings (issue 7), shared by ConfigMap keys and annotations.

`proxy-next-upstream` takes nginx's `proxy_next_upstream` words: `error`, `timeout`, `invalid_header`,
`http_500`, `http_502`, `http_503`, `http_504`, `http_403`, `http_404`, `http_429`, `non_idempotent`, or `off`
alone. ingress-nginx's default is `error timeout`. `-tries` counts attempts in all (the first included; 0 means
no limit other than the endpoints available), `-timeout` bounds the time from the first attempt after which no
new attempt starts.

This module imports nothing from `config.settings` at import time: `config.settings` builds its key table
from `health_keys()`, so the generic parsers are fetched when that is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyngress.model import RETRY_CONDITIONS, ProxySettings, RetryPolicy


def parse_next_upstream(text: str) -> str:
    words = text.replace(",", " ").split()
    unknown = [w for w in words if w not in RETRY_CONDITIONS]
    if not words or unknown:
        raise ValueError(f"{text!r}: expected words among {' '.join(RETRY_CONDITIONS)}")
    if "off" in words and len(words) > 1:
        raise ValueError(f"{text!r}: 'off' cannot be combined with other conditions")
    return " ".join(dict.fromkeys(words))


def retry_policy(next_upstream: str, tries: int, timeout: float, body_buffer: int = 8192) -> RetryPolicy:
    """The RetryPolicy for a validated `proxy-next-upstream` value, its -tries and -timeout, and the
    client-body-buffer-size."""
    words = set(next_upstream.split())
    if "off" in words:
        return RetryPolicy(on_error=False, on_timeout=False, tries=1, timeout=timeout, body_buffer=body_buffer)
    statuses = frozenset(int(w[5:]) for w in words if w.startswith("http_"))
    return RetryPolicy(on_error="error" in words, on_timeout="timeout" in words, statuses=statuses,
                       on_invalid_header="invalid_header" in words, non_idempotent="non_idempotent" in words,
                       tries=tries, timeout=timeout, body_buffer=body_buffer)


def default_retry(settings: ProxySettings) -> RetryPolicy:
    """The ConfigMap's policy: routes without retry annotations, and the default backend."""
    return retry_policy(settings.proxy_next_upstream, settings.proxy_next_upstream_tries,
                        settings.proxy_next_upstream_timeout, settings.client_body_buffer_size)


def parse_percent(text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise ValueError(f"{text!r} is not a percentage from 0 to 100") from None
    if not 0 <= value <= 100:
        raise ValueError(f"{text!r} is not a percentage from 0 to 100")
    return value


def health_keys() -> dict[str, Callable[[str], dict[str, Any]]]:
    """ConfigMap key -> parser returning the ProxySettings fields it sets (merged into config.settings)."""
    from pyngress.config.settings import parse_count, parse_duration, parse_size

    def one(attr: str, parse: Callable[[str], Any]) -> Callable[[str], dict[str, Any]]:
        return lambda text: {attr: parse(text)}

    return {
        "proxy-next-upstream": one("proxy_next_upstream", parse_next_upstream),
        "proxy-next-upstream-tries": one("proxy_next_upstream_tries", parse_count),
        "proxy-next-upstream-timeout": one("proxy_next_upstream_timeout", parse_duration),
        "client-body-buffer-size": one("client_body_buffer_size", parse_size),
        "retry-budget-percent": one("retry_budget_percent", parse_percent),
        "retry-budget-window": one("retry_budget_window", parse_duration),
        "retry-budget-min-retries": one("retry_budget_min_retries", parse_count),
        "outlier-consecutive-failures": one("outlier_consecutive_failures", parse_count),
        "outlier-base-ejection-time": one("outlier_base_ejection_time", parse_duration),
        "outlier-max-ejection-time": one("outlier_max_ejection_time", parse_duration),
        "max-ejection-percent": one("max_ejection_percent", lambda t: int(parse_percent(t))),
        "worker-shutdown-timeout": one("worker_shutdown_timeout", parse_duration),
        "shutdown-grace-period": one("shutdown_grace_period", parse_duration),
    }
