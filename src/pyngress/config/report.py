"""`format_check(snapshot)`: the plain-text report `pyngress check` prints.

Plain text, no colour, no terminal width detection: it is piped into files, CI logs and diffs (the golden tests
compare it byte for byte). Layout:

    HOST      PATH  TYPE    BACKEND   ENDPOINTS                     BALANCE      INGRESS
    foo.com   /api  Prefix  api:http  10.0.0.1:8080, 10.0.0.2:8080  round_robin  default/web
    *         /     Prefix  web:80    (none: no ready endpoints)    least_conn   default/web

    default backend: default/fallback:80 -> 10.0.0.9:8080

    health checks:
      default/api:http: GET /healthz every 5s, slow start 30s

    problems (1 error, 1 warning):
      error: web.yaml: Ingress default/web: spec.rules[0].host: must be lower case ('foo.com')
      warning: ...

Rows are in Snapshot order (hosts sorted, the no-host "*" rules last, as they are what requests fall through
to). Columns are as wide as their widest cell; an endpoint list longer than one is cut to "+N more" so that
one big Deployment does not push a row past 120 columns. An endpoint's weight, when not 1, follows its address
after WEIGHT_SIGN, the multiplication sign: "10.0.0.1:8080", the sign, "4" (and "0" for a drained endpoint).
The "health checks" block appears only when a backend has an active check or slow start (issue 7).
Problems: errors first, each as str(problem), which names the file, the object and the field.

Layer 4 services (issue 9), only when there are some, get a table of their own between the default backend and
the problems: protocol, listen port, backend, endpoints, balance, PROXY protocol ("in", "out v1"), and where
they were declared (a ConfigMap entry or a LoadBalancer Service port).
"""

from __future__ import annotations

from dataclasses import replace

from pyngress.config.tls_report import tls_lines
from pyngress.model import Backend, Endpoint, Problem, Snapshot, StreamService

HEADER = ("HOST", "PATH", "TYPE", "BACKEND", "ENDPOINTS", "BALANCE", "INGRESS")
MAX_ENDPOINTS_SHOWN = 1  # with the BALANCE column, two would push ordinary rows past 120
NO_ENDPOINTS = "no ready endpoints"
WEIGHT_SIGN = "\u00d7"  # the multiplication sign: "10.0.0.1:8080" + WEIGHT_SIGN + "4" reads "4 times"


def format_check(snapshot: Snapshot) -> str:
    lines = _route_table(snapshot)
    lines += _flow_lines(snapshot)  # issue 5: only when some route has limits or access lists
    lines += tls_lines(snapshot.tls)  # issue 4: only when TLS is used
    lines += ["", _default_line(snapshot.default_backend), ""]
    if snapshot.streams:  # issue 9 (L4)
        lines += [*_stream_table(snapshot.streams), ""]
    lines += _health_lines(snapshot)  # issue 7: only when some backend has an active check or slow start
    lines += _problem_lines(snapshot.problems)
    return "\n".join(lines) + "\n"


def _route_table(snapshot: Snapshot) -> list[str]:
    if not snapshot.routes:
        return ["no routes"]
    rows = [HEADER] + [
        (
            r.host or "*",
            r.path,
            r.path_type.value,
            f"{r.backend.service}:{r.backend.port}",
            format_endpoints(r.backend),
            f"{r.balance.label}, {r.affinity.label}" if r.affinity.kind else r.balance.label,
            r.ingress,
        )
        for r in snapshot.routes
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(len(HEADER) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]


def _flow_lines(snapshot: Snapshot) -> list[str]:
    """One line per Ingress with limits or access lists: "limits: shop/web: 10 r/s burst 50, allowlist"."""
    seen = {r.flow.owner: r.flow.label for r in snapshot.routes if r.flow is not None}
    if snapshot.default_flow is not None:
        seen.setdefault(snapshot.default_flow.owner, snapshot.default_flow.label)
    return ["", *(f"limits: {owner}: {label}" for owner, label in sorted(seen.items()))] if seen else []


STREAM_HEADER = ("PROTO", "PORT", "BACKEND", "ENDPOINTS", "BALANCE", "PROXY", "FROM")


def _stream_table(streams: tuple[StreamService, ...]) -> list[str]:
    rows = [STREAM_HEADER] + [
        (s.protocol.lower(), str(s.port), s.backend.key, format_endpoints(s.backend),
         f"{s.balance.label}, {s.affinity.label}" if s.affinity.kind else s.balance.label,
         s.proxy_label or "-", s.origin)
        for s in streams
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(len(STREAM_HEADER) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]


def format_endpoints(backend: Backend) -> str:
    """ "10.0.0.1:80, +1 more", cut after one, or "(none: <why>)". A weight other than 1 follows WEIGHT_SIGN."""
    ready = [e for e in backend.endpoints if not e.terminating]  # issue 7: terminating ones are a fallback
    if ready != list(backend.endpoints):
        backend = replace(backend, endpoints=tuple(ready))
    if not backend.endpoints:
        return f"(none: {backend.problem or NO_ENDPOINTS})"
    shown = [_endpoint(e) for e in backend.endpoints[:MAX_ENDPOINTS_SHOWN]]
    hidden = len(backend.endpoints) - len(shown)
    return ", ".join(shown) + (f", +{hidden} more" if hidden else "")


def _endpoint(endpoint: Endpoint) -> str:
    return endpoint.key if endpoint.weight == 1 else f"{endpoint.key}{WEIGHT_SIGN}{endpoint.weight}"


def _default_line(backend: Backend | None) -> str:
    if backend is None:
        return "default backend: none (404)"
    return f"default backend: {backend.key} -> {format_endpoints(backend)}"


def _health_lines(snapshot: Snapshot) -> list[str]:
    """"health checks:" and one line per backend with an active check or slow start, then a blank line."""
    lines = []
    for backend in snapshot.backends.values():
        health = backend.health
        parts = [health.active.label] if health.active is not None else []
        if health.slow_start:
            parts.append(f"slow start {health.slow_start:g}s")
        if parts:
            lines.append(f"  {backend.key}: {', '.join(parts)}")
    return ["health checks:", *lines, ""] if lines else []


def _problem_lines(problems: tuple[Problem, ...]) -> list[str]:
    if not problems:
        return ["no problems"]
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    counts = ", ".join(
        f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((errors, "error"), (warnings, "warning")) if n
    )
    ordered = sorted(problems, key=lambda p: p.severity != "error")
    return [f"problems ({counts}):", *(f"  {p.severity}: {p}" for p in ordered)]
