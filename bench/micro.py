"""Micro-benchmark of the pure per-request pieces: route match and round-robin pick, in ns per operation.

These run once per proxied request, so their cost is a floor under pyngress's per-request latency that no I/O
tuning can remove. Each case is timed with `timeit` (autorange to find a loop count that takes >= 0.2 s, then
the best of 5 repeats: the minimum is the run least disturbed by the rest of the machine).

The route table is realistic for a busy cluster: 50 hosts with 5 Prefix paths each (250 routes). The matched
request carries a port in its Host header and a path under one of the prefixes, as real traffic does.

Usage: python bench/micro.py
"""

from __future__ import annotations

import random
import sys
import timeit
from collections.abc import Callable

HOSTS = 50
PATHS = ("/", "/api", "/api/v1", "/static", "/users")
REPEATS = 5


def load() -> tuple[type, type, object]:
    """(RouteTable, SmoothWeightedRoundRobin, NO_CONTEXT), or exit with a message saying what is missing."""
    try:
        from pyngress.balancing import NO_CONTEXT, SmoothWeightedRoundRobin
        from pyngress.routing import RouteTable
    except ImportError as e:
        sys.exit(f"micro.py: cannot import the pieces to time ({e}).\n"
                 "It needs pyngress.routing.RouteTable and "
                 "pyngress.balancing.SmoothWeightedRoundRobin / NO_CONTEXT; "
                 "if they are not written yet, run it again once they are.")
    return RouteTable, SmoothWeightedRoundRobin, NO_CONTEXT


def build_routes() -> list[object]:
    from pyngress.model import Backend, Endpoint, PathType, Route

    routes: list[object] = []
    for i in range(HOSTS):
        host = f"app{i}.example.com"
        backend = Backend(key=f"default/app{i}:http", namespace="default", service=f"app{i}", port="http",
                          endpoints=(Endpoint("10.0.0.1", 8080),))
        routes.extend(Route(host, path, PathType.PREFIX, backend, f"default/app{i}") for path in PATHS)
    return routes


def ns_per_op(func: Callable[[], object]) -> float:
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=REPEATS, number=number))
    return best / number * 1e9


def check(label: str, got: object, want: Callable[[object], bool]) -> None:
    if not want(got):
        sys.exit(f"micro.py: {label}: unexpected result {got!r}; the timing would be meaningless")


def main() -> int:
    route_table_cls, round_robin_cls, no_context = load()
    from pyngress.model import Endpoint

    table = route_table_cls(build_routes())
    host, path = b"app37.example.com:8080", b"/api/v1/orders/42"
    check("route match", table.match(host, path),
          lambda r: getattr(r, "host", None) == "app37.example.com" and getattr(r, "path", None) == "/api/v1")
    check("route miss", table.match(b"unknown.example.org", path), lambda r: r is None)

    rr = round_robin_cls([Endpoint(f"10.0.0.{i}", 8080) for i in range(1, 4)], random.Random(0))
    check("rr pick", rr.pick(no_context), lambda e: e is not None)

    cases: list[tuple[str, Callable[[], object]]] = [
        (f"route match ({HOSTS * len(PATHS)} routes, host:port, prefix hit)", lambda: table.match(host, path)),
        ("route match (unknown host, miss)", lambda: table.match(b"unknown.example.org", path)),
        ("round robin pick (3 endpoints)", lambda: rr.pick(no_context)),
    ]
    print(f"{'operation':<55} {'ns/op':>8}")
    for label, func in cases:
        print(f"{label:<55} {ns_per_op(func):>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
