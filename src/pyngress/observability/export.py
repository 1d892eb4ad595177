"""One worker's live state as plain JSON data (`worker_state`), and several workers' merged into one (`merge`).

This is the only format that crosses process boundaries (`--workers N`: the parent asks every worker over a
pipe and merges, see `observability.workers`), and the one /metrics, /status and the dashboard are built from.
It is made at scrape time, never per request. Counters and histogram buckets add up across workers; gauges
of the configuration (version, last reload) take the worst or the newest, as written in `merge`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pyngress import __version__
from pyngress.observability.events import EVENTS
from pyngress.observability.recorder import METHODS, Recorder

if TYPE_CHECKING:
    from pyngress.runtime.server import ProxyServer

State = dict[str, Any]


def worker_state(server: ProxyServer, *, ready: bool = True) -> State:
    """Everything /metrics and /status need from this worker, as JSON-able data."""
    recorder = server.recorder
    serving = server.dataplane.serving
    inflight: dict[str, int] = {}
    active: dict[str, int] = {}
    for conn in server.connections:
        active[conn.peer.port.decode()] = active.get(conn.peer.port.decode(), 0) + 1
        endpoint = conn.queue[0].endpoint if conn.queue else None
        if endpoint is not None:
            inflight[endpoint.key] = inflight.get(endpoint.key, 0) + 1
    for session in getattr(server, "sessions", ()):  # HTTP/2 connections, and their streams in flight
        peer = getattr(session, "peer", None)
        if peer is not None:
            active[peer.port.decode()] = active.get(peer.port.decode(), 0) + 1
        for stream in getattr(session, "streams", {}).values():
            ex = getattr(stream, "ex", None)
            endpoint = ex.endpoint if ex is not None and not stream.response_ended else None
            if endpoint is not None:
                inflight[endpoint.key] = inflight.get(endpoint.key, 0) + 1
    return {
        "pid": os.getpid(),
        "version": __version__,
        "time": time.time(),
        "ready": ready and not server.draining,
        "draining": server.draining,
        "config": {"generation": serving.snapshot.version, "applied": EVENTS.config_time,
                   "last_reload_ok": EVENTS.last_reload_ok, "last_success": EVENTS.last_success_time},
        "series": _series(recorder),
        "endpoints": _endpoints(server, inflight),
        "window": _window(recorder),
        "listeners": {**{recorder.listeners.get(port, port.decode()): {
            "accepted": n, "active": active.get(port.decode(), 0)} for port, n in recorder.accepted.items()},
            **_streams(server)},
        "events": _events(),
        "access_log": _log_counts(recorder),
    }


def _series(recorder: Recorder) -> list[Any]:
    out = []
    for series in recorder.series.values():
        cells = [[key >> 4, METHODS[key & 15].decode(), c.count, c.duration, c.duration_sum, c.upstream,
                  c.upstream_sum, c.upstream_count, c.request_size, c.request_size_sum, c.response_size,
                  c.response_size_sum] for key, c in series.cells.items()]
        if cells:
            out.append([list(series.labels), cells])
    return out


def _endpoints(server: ProxyServer, inflight: dict[str, int]) -> dict[str, Any]:
    recorder = server.recorder
    stats = server.dataplane.serving.stats
    serving_keys = server.dataplane.serving.endpoint_keys
    health = recorder.health
    out = {}
    for key, cell in recorder.endpoints.items():
        entry = stats.peek(key)
        state, ejected, ejections = health.endpoint_health(key) if health is not None else ("ready", False, 0)
        out[key] = {
            "namespace": cell.namespace, "service": cell.service, "pod": cell.pod, "codes": list(cell.codes),
            "failures": cell.failures, "upstream_seconds": cell.upstream_sum,
            "inflight": inflight.get(key, 0),
            # the load-aware balancers' peak EWMA when one keeps it, else the recorder's (observability only)
            "ewma": entry.ewma if entry is not None and entry.measured else
            (cell.ewma if cell.ewma >= 0 else None),
            "serving": key in serving_keys, "health": state, "ejected": ejected, "ejections": ejections,
            "health_source": "health checks" if health is not None else "EndpointSlice readiness",
        }
    return out


def _window(recorder: Recorder) -> dict[str, Any]:
    """The last minute: now minus the oldest sample of the window, per endpoint and per service."""
    then, totals, errors, services = recorder.window[0]
    now, totals_now, errors_now, services_now = recorder.totals(time.monotonic())
    return {"seconds": max(0.0, now - then),
            "endpoints": {k: n - totals.get(k, 0) for k, n in totals_now.items()},
            "errors": {k: n - errors.get(k, 0) for k, n in errors_now.items()},
            "services": {k: _minus(h, services.get(k)) for k, h in services_now.items()}}


def _minus(now: list[int], then: list[int] | None) -> list[int]:
    return list(now) if then is None else [a - b for a, b in zip(now, then, strict=True)]


def _streams(server: ProxyServer) -> dict[str, dict[str, int]]:
    """L4 TCP listeners ("tcp/9000"): accepted (counted by the stream runtime) and open connections."""
    streams = getattr(server, "streams", None)
    active: dict[str, int] = {}
    for conn in getattr(streams, "connections", ()):
        key = conn.config.service.listen_key
        active[key] = active.get(key, 0) + 1
    listening = getattr(streams, "listeners", {})  # this server's: the counter is per process
    return {key: {"accepted": EVENTS.stream_accepted[key], "active": active.get(key, 0)} for key in listening}


def _events() -> dict[str, list[Any]]:
    e = EVENTS
    return {"tls_handshakes": _rows(e.tls_handshakes), "tls_failures": _rows(e.tls_failures),
            "rate_limited": _rows(e.rate_limited), "reloads": _rows(e.reloads),
            "kube_events": _rows(e.kube_events), "kube_relists": _rows(e.kube_relists),
            "kube_errors": _rows(e.kube_errors)}


def _rows(counter: Iterable[Any]) -> list[Any]:
    return [[list(k), n] for k, n in counter.items()]  # type: ignore[attr-defined]


def _log_counts(recorder: Recorder) -> dict[str, int]:
    sink = recorder.sink
    return {"lines": getattr(sink, "lines", 0), "dropped": getattr(sink, "dropped_lines", 0)}


# -- merging workers -----------------------------------------------------------------------------------------


def merge(states: Sequence[State]) -> State:
    """One picture from several workers: sums of counters, the worst readiness, the newest configuration."""
    if len(states) == 1:
        return {**states[0], "workers": [_worker_summary(states[0])]}
    first = states[0]
    merged: State = {
        "pid": os.getpid(), "version": first["version"], "time": max(s["time"] for s in states),
        "ready": all(s["ready"] for s in states), "draining": any(s["draining"] for s in states),
        "config": {"generation": max(s["config"]["generation"] for s in states),
                   "applied": max(s["config"]["applied"] for s in states),
                   "last_reload_ok": all(s["config"]["last_reload_ok"] for s in states),
                   "last_success": max(s["config"]["last_success"] for s in states)},
        "series": _merge_series(states), "endpoints": _merge_endpoints(states),
        "window": _merge_window(states), "listeners": _merge_nested([s["listeners"] for s in states]),
        "events": {k: _merge_rows([s["events"][k] for s in states]) for k in first["events"]},
        "access_log": _merge_nested([{"x": s["access_log"]} for s in states])["x"],
        "workers": [_worker_summary(s) for s in states],
        "routes": first.get("routes", []),
    }
    return merged


def _worker_summary(state: State) -> dict[str, Any]:
    requests = sum(sum(e["codes"]) for e in state["endpoints"].values())
    return {"pid": state["pid"], "generation": state["config"]["generation"], "ready": state["ready"],
            "requests": requests}


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, list):
        return [_add(x, y) for x, y in zip(a, b, strict=True)]
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return a + b
    return a


def _merge_series(states: Sequence[State]) -> list[Any]:
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for state in states:
        for labels, rows in state["series"]:
            for row in rows:
                key = (*labels, row[0], row[1])
                cells[key] = [*row[:2], *_add(cells[key][2:], row[2:])] if key in cells else row
    by_labels: dict[tuple[str, ...], list[Any]] = {}
    for key, row in cells.items():
        by_labels.setdefault(key[:5], []).append(row)
    return [[list(labels), rows] for labels, rows in by_labels.items()]


def _merge_endpoints(states: Sequence[State]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for state in states:
        for key, e in state["endpoints"].items():
            if key not in out:
                out[key] = dict(e)
                continue
            m = out[key]
            for name in ("codes", "failures", "upstream_seconds", "inflight", "ejections"):
                m[name] = _add(m[name], e[name])
            m["ejected"] = m["ejected"] or e["ejected"]
            m["serving"] = m["serving"] or e["serving"]
            if e["ewma"] is not None:  # the slowest worker's view: the one a user wants to see
                m["ewma"] = e["ewma"] if m["ewma"] is None else max(m["ewma"], e["ewma"])
    return out


def _merge_window(states: Sequence[State]) -> dict[str, Any]:
    windows = [s["window"] for s in states]
    return {"seconds": max((w["seconds"] for w in windows), default=0.0),
            "endpoints": _merge_nested([w.get("endpoints", {}) for w in windows]),
            "errors": _merge_nested([w.get("errors", {}) for w in windows]),
            "services": _merge_nested([w.get("services", {}) for w in windows])}


def _merge_nested(dicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if k not in out:
                out[k] = v
            elif isinstance(v, dict):
                out[k] = _merge_nested([out[k], v])
            else:
                out[k] = _add(out[k], v)
    return out


def _merge_rows(tables: Sequence[list[Any]]) -> list[Any]:
    sums: dict[tuple[str, ...], int] = {}
    for rows in tables:
        for labels, n in rows:
            sums[tuple(labels)] = sums.get(tuple(labels), 0) + n
    return [[list(k), n] for k, n in sums.items()]
