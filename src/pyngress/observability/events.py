"""Control-plane and connection-level counters that other parts of pyngress increment: the API they call.

One `Events` object per process, `EVENTS`, plain ints keyed by label tuples; `observability.export` reads it
at scrape time. Every function here is O(1) and safe to call from the event-loop thread (not thread-safe:
call from the loop). With `--workers N` each worker counts its own and a scrape sums them.

    from pyngress.observability import events
    events.tls_handshake(ok=False, reason="unknown_ca")    # runtime TLS: every handshake
    events.rate_limited("shop", "shop-api", "rps")          # policy: a request refused by limit-rps / ...
    events.config_reload(ok=True, version=7)                # any source: a configuration applied or rejected
    events.kube_watch_event("endpointslices", "MODIFIED")   # kubernetes source: one watch event
    events.kube_relist("endpointslices")                    # a list (start, 410 Gone, reconnect)
    events.kube_watch_error("endpointslices")               # a failed list/watch request
    events.stream_accepted("tcp/9000")                      # L4: a TCP connection accepted
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Events:
    tls_handshakes: Counter[tuple[str]] = field(default_factory=Counter)  # (result: ok | failed)
    tls_failures: Counter[tuple[str]] = field(default_factory=Counter)  # (reason)
    rate_limited: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (namespace, ingress, kind)
    reloads: Counter[tuple[str]] = field(default_factory=Counter)  # (result: applied | rejected)
    kube_events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (resource, type)
    kube_relists: Counter[tuple[str]] = field(default_factory=Counter)  # (resource)
    kube_errors: Counter[tuple[str]] = field(default_factory=Counter)  # (resource)
    stream_accepted: Counter[str] = field(default_factory=Counter)  # L4 TCP listener ("tcp/9000") -> accepted
    last_reload_ok: bool = True
    last_success_time: float = field(default_factory=time.time)  # start-up counts as the first success
    config_version: int = 0
    config_time: float = field(default_factory=time.time)  # when the serving configuration was applied


EVENTS = Events()


def tls_handshake(ok: bool, reason: str = "") -> None:
    EVENTS.tls_handshakes["ok" if ok else "failed",] += 1
    if not ok:
        EVENTS.tls_failures[reason or "other",] += 1


def rate_limited(namespace: str, ingress: str, kind: str) -> None:
    """`kind`: which limit refused the request (rps, rpm, connections, ...)."""
    EVENTS.rate_limited[namespace, ingress, kind] += 1


def config_reload(ok: bool, version: int, now: float | None = None) -> None:
    """A configuration was applied (`ok`, now serving `version`) or rejected (still serving `version`)."""
    now = time.time() if now is None else now
    EVENTS.reloads["applied" if ok else "rejected",] += 1
    EVENTS.last_reload_ok = ok
    if ok:
        EVENTS.last_success_time = EVENTS.config_time = now
        EVENTS.config_version = version


def config_loaded(version: int, now: float | None = None) -> None:
    """The first configuration at start-up (not a reload)."""
    EVENTS.config_version = version
    EVENTS.config_time = EVENTS.last_success_time = time.time() if now is None else now


def stream_accepted(listen_key: str) -> None:
    """An L4 TCP connection accepted on the listener `listen_key` ("tcp/9000")."""
    EVENTS.stream_accepted[listen_key] += 1


def kube_watch_event(resource: str, kind: str) -> None:
    EVENTS.kube_events[resource, kind] += 1


def kube_relist(resource: str) -> None:
    EVENTS.kube_relists[resource,] += 1


def kube_watch_error(resource: str) -> None:
    EVENTS.kube_errors[resource,] += 1
