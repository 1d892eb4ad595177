"""The JSON documents of /status and /config, built from the (merged) worker state and a Snapshot. Pure.

/status answers "where does my traffic go": the configuration generation, every route with its backend,
every endpoint with its health, in-flight requests, responses served (in all and over the last minute, which
is what the dashboard draws), latency (peak EWMA where a load-aware balancer keeps one, and the mean over the
last minute), and per service the p50/p99 and error rate over the last minute.

/config is the compiled Snapshot as JSON with anything secret-looking redacted: a field whose name mentions a
key, secret, salt, password, token or certificate, and any string holding a PEM block. Generic on purpose,
so that what later releases add to the Snapshot (TLS certificates and keys) is covered without a list here.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pyngress.model import Route, Snapshot
from pyngress.observability.export import State
from pyngress.observability.recorder import DURATION_BUCKETS

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"key|secret|salt|passw|token|cert|private|credential", re.IGNORECASE)
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a field or data key; not a "ns/service:port" identity
_PEM = "-----BEGIN"
_NOT_SECRET = frozenset({"key", "balancer_key", "endpoint_keys"})  # identities, not key material


def routes_of(snapshot: Snapshot) -> list[dict[str, Any]]:
    """The routing table for /status: one entry per rule, then the default backend."""
    rows = [_route(r) for r in snapshot.routes]
    if snapshot.default_backend is not None:
        b = snapshot.default_backend
        rows.append({"host": "*", "path": "(default backend)", "path_type": "", "ingress": "",
                     "namespace": b.namespace, "service": b.service, "port": b.port, "backend": b.key,
                     "balance": snapshot.default_balance.label, "affinity": snapshot.default_affinity.label,
                     "endpoints": [e.key for e in b.endpoints]})
    return rows


def _route(r: Route) -> dict[str, Any]:
    b = r.backend
    return {"host": r.host or "*", "path": r.path, "path_type": r.path_type.value, "ingress": r.ingress,
            "namespace": b.namespace, "service": b.service, "port": b.port, "backend": b.key,
            "balance": r.balance.label, "affinity": r.affinity.label, "endpoints": [e.key for e in b.endpoints]}


def status_document(state: State) -> dict[str, Any]:
    window = state["window"]
    endpoints = []
    for key, e in sorted(state["endpoints"].items(), key=lambda kv: (kv[1]["service"], kv[1]["pod"], kv[0])):
        served = sum(e["codes"])
        endpoints.append({
            "endpoint": key, "namespace": e["namespace"], "service": e["service"], "pod": e["pod"],
            "serving": e["serving"], "health": e["health"], "health_source": e["health_source"],
            "ejected": e["ejected"], "ejections": e["ejections"], "inflight": e["inflight"],
            "requests": served, "errors_5xx": e["codes"][5], "failed_attempts": e["failures"],
            "requests_last_minute": window["endpoints"].get(key, 0),
            "errors_last_minute": window["errors"].get(key, 0),
            "ewma_ms": round(e["ewma"] * 1000, 3) if e["ewma"] is not None else None,
            "mean_upstream_ms": round(e["upstream_seconds"] / served * 1000, 3) if served else None,
        })
    return {
        "version": state["version"], "ready": state["ready"], "draining": state["draining"],
        "config": state["config"], "workers": state.get("workers", []), "window_seconds": window["seconds"],
        "routes": state.get("routes", []), "endpoints": endpoints, "services": _services(state, endpoints),
        "listeners": state["listeners"],
    }


def _services(state: State, endpoints: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    names = sorted({f"{e['namespace']}/{e['service']}" for e in endpoints})
    for name in names:
        mine = [e for e in endpoints if f"{e['namespace']}/{e['service']}" == name]
        hist = state["window"].get("services", {}).get(name)
        total = sum(e["requests_last_minute"] for e in mine)
        errors = sum(e["errors_last_minute"] for e in mine)
        out.append({"service": name, "requests_last_minute": total, "errors_last_minute": errors,
                    "error_rate": errors / total if total else 0.0,
                    "p50_ms": _ms(quantile(0.5, hist)), "p99_ms": _ms(quantile(0.99, hist))})
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def quantile(q: float, counts: Sequence[int] | None, bounds: Sequence[float] = DURATION_BUCKETS) -> float | None:
    """Prometheus' histogram_quantile on non-cumulative bucket counts (last one +Inf): linear within a bucket;
    a quantile in +Inf reports the highest finite bound. None when there are no observations."""
    if not counts or not sum(counts):
        return None
    rank = q * sum(counts)
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return bounds[-1]
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - seen) / n
        seen += n
    return bounds[-1]


def config_document(snapshot: Snapshot) -> Any:
    return redact(jsonable(snapshot))


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        try:
            text = obj.decode()
        except UnicodeDecodeError:  # binary (DER keys and certificates, say): never shown
            return f"[{len(obj)} bytes]"
        return text if text.isprintable() or _PEM in text else f"[{len(obj)} bytes]"
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def redact(obj: Any, name: str = "") -> Any:
    """Replace secret-looking values (see the module docstring) by "[redacted]"; empty values stay visible.
    Containers are walked, not dropped: under `certificates` the names, expiry and fingerprint stay, the key
    and the PEM blocks go."""
    if isinstance(obj, dict):
        return {k: redact(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v, name) for v in obj]
    if (name and name not in _NOT_SECRET and _FIELD_NAME.fullmatch(name) and _SECRET_NAME.search(name)
            and obj not in ("", None, 0)):
        return REDACTED
    if isinstance(obj, str) and _PEM in obj:
        return REDACTED
    return obj
