"""format_check: the plain-text report of `pyngress check`."""

from __future__ import annotations

from types import MappingProxyType

from pyngress.config import format_check
from pyngress.config.compile import problem_order
from pyngress.model import Backend, Endpoint, PathType, Problem, Route, Snapshot


def backend(n_endpoints: int, problem: str = "") -> Backend:
    endpoints = tuple(Endpoint(f"10.0.0.{i}", 8080) for i in range(1, n_endpoints + 1))
    return Backend("ns/web:http", "ns", "web", "http", endpoints, problem)


def test_empty_snapshot() -> None:
    assert format_check(Snapshot(1)) == "no routes\n\ndefault backend: none (404)\n\nno problems\n"


def test_table_columns_and_no_host_star() -> None:
    snap = Snapshot(1, routes=(Route("", "/", PathType.PREFIX, backend(2), "ns/site"),))
    assert format_check(snap).splitlines()[:2] == [
        "HOST  PATH  TYPE    BACKEND   ENDPOINTS               BALANCE      INGRESS",
        "*     /     Prefix  web:http  10.0.0.1:8080, +1 more  round_robin  ns/site",
    ]


def test_long_endpoint_lists_are_cut() -> None:
    snap = Snapshot(1, default_backend=backend(5))
    assert "default backend: ns/web:http -> 10.0.0.1:8080, +4 more" in format_check(
        snap
    )


def test_no_endpoints_shows_the_reason() -> None:
    routes = (
        Route("a.com", "/", PathType.EXACT, backend(0, "Service ns/web not found"), "ns/i"),
        Route("b.com", "/", PathType.EXACT, backend(0), "ns/i"),
    )
    text = format_check(Snapshot(1, routes=routes))
    assert "(none: Service ns/web not found)" in text
    assert "(none: no ready endpoints)" in text


def test_errors_are_listed_before_warnings_with_counts() -> None:
    warning = Problem("Ingress", "ns", "a", "spec", "w", "a.yaml", "warning")
    error = Problem("Ingress", "ns", "b", "spec", "e", "b.yaml")
    text = format_check(Snapshot(1, problems=(warning, error, error)))
    assert text.endswith(
        "problems (2 errors, 1 warning):\n"
        "  error: b.yaml: Ingress ns/b: spec: e\n"
        "  error: b.yaml: Ingress ns/b: spec: e\n"
        "  warning: a.yaml: Ingress ns/a: spec: w\n"
    )


def test_rows_fit_in_120_columns_for_ordinary_names() -> None:
    route = Route("shop.example.com", "/api/v1", PathType.IMPLEMENTATION_SPECIFIC, backend(9), "production/shop")
    snap = Snapshot(1, routes=(route,), backends=MappingProxyType({"ns/web:http": route.backend}))
    assert max(len(line) for line in format_check(snap).splitlines()) <= 120


def test_problems_sort_numbers_in_fields_as_numbers() -> None:
    fields = [
        "spec.rules[0].http.paths[10].path",
        "spec.rules[0].http.paths[9].path",
        "spec",
        "spec.rules[2].host",
    ]
    problems = [Problem("Ingress", "ns", "a", f, "m") for f in fields]
    assert [p.field for p in sorted(problems, key=problem_order)] == [
        "spec",
        "spec.rules[0].http.paths[9].path",
        "spec.rules[0].http.paths[10].path",
        "spec.rules[2].host",
    ]
