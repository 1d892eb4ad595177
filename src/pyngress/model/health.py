"""What a backend asks of health checking and what a route asks of retries (issue 7). Frozen, compiled once.

`HealthSpec` sits on a `Backend` (a Service port): the active check its endpoints get, and the slow-start
window. It comes from the Service's annotations, else from the oldest served Ingress routing to it that sets
them (see `config.health`). `RetryPolicy` sits on a `Route`: ingress-nginx's `proxy-next-upstream*`, from the
Ingress's annotations, else the ConfigMap's keys.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ActiveCheck:
    """`pyngress.io/health-check-*`: probe each endpoint every `interval` seconds (jittered)."""

    path: str = "/"  # HTTP GET target; ignored for tcp
    tcp: bool = False  # a connect check instead of an HTTP GET
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2  # consecutive passes that bring an unhealthy endpoint back
    unhealthy_threshold: int = 3  # consecutive failures that take an endpoint out
    expected: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive status ranges that pass

    def passes(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expected)

    @property
    def label(self) -> str:
        what = "tcp" if self.tcp else f"GET {self.path}"
        return f"{what} every {self.interval:g}s"


@dataclass(frozen=True, slots=True)
class HealthSpec:
    active: ActiveCheck | None = None  # None: no active check (passive ejection still applies)
    slow_start: float = 0.0  # seconds over which a new or recovered endpoint's weight ramps up; 0: off


NO_HEALTH = HealthSpec()

RETRY_CONDITIONS = ("error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
                    "http_403", "http_404", "http_429", "non_idempotent", "off")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt moves to another endpoint (nginx's proxy_next_upstream and friends)."""

    on_error: bool = True  # connect failure, or the connection closed before a response head
    on_timeout: bool = True  # proxy-connect-timeout, or proxy-read/send-timeout before the response head
    statuses: frozenset[int] = frozenset()  # response statuses retried (http_502...), before forwarding
    on_invalid_header: bool = False  # a malformed or oversized response head
    non_idempotent: bool = False  # also retry POST, PATCH, LOCK... after their request was sent
    tries: int = 3  # attempts in all, the first included; 0 = unlimited (bounded by the endpoints)
    timeout: float = 0.0  # seconds from the first attempt after which no new attempt starts; 0 = no limit
    body_buffer: int = 8192  # client-body-buffer-size: request body bytes kept for a replay, at most

    @property
    def off(self) -> bool:
        return not (self.on_error or self.on_timeout or self.statuses or self.on_invalid_header)


DEFAULT_RETRY = RetryPolicy()
