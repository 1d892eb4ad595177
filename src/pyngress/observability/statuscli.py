"""`pyngress status`: a running pyngress's /status as tables (routes; endpoints with health and traffic share)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

TIMEOUT = 5.0


def fetch_status(admin_url: str) -> Any:
    with urllib.request.urlopen(admin_url.rstrip("/") + "/status", timeout=TIMEOUT) as response:
        return json.loads(response.read())


def show_status(admin_url: str, *, as_json: bool = False, console: Console | None = None) -> int:
    console = console or Console()
    try:
        doc = fetch_status(admin_url)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        console.print(f"[red]error:[/] cannot read {admin_url}/status: {exc}", highlight=False)
        return 1
    if as_json:
        console.print_json(data=doc)
        return 0
    console.print(summary(doc), highlight=False)
    console.print(routes_table(doc))
    for table in endpoints_tables(doc):
        console.print(table)
    return 0


def summary(doc: dict[str, Any]) -> str:
    config = doc["config"]
    applied = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(config["applied"]))
    ready = "[green]ready[/]" if doc["ready"] else "[red]not ready[/]"
    reload = "" if config["last_reload_ok"] else "  [red]last reload rejected[/]"
    return (f"pyngress {doc['version']}  {ready}  configuration generation {config['generation']} "
            f"(applied {applied})  workers {len(doc['workers'])}{reload}")


def routes_table(doc: dict[str, Any]) -> Table:
    table = Table(title="routes")
    for name in ("host", "path", "ingress", "backend", "balance", "eps"):
        table.add_column(name, justify="right" if name == "eps" else "left")
    for r in doc["routes"]:
        path = r["path"] if r["path_type"] != "Exact" else f"={r['path']}"
        table.add_row(r["host"], path, r["ingress"], r["backend"],
                      r["balance"] + (f", {r['affinity']}" if r["affinity"] else ""), str(len(r["endpoints"])))
    return table


def endpoints_tables(doc: dict[str, Any]) -> list[Table]:
    """One table per service: each endpoint's health, in-flight, requests and their share of the service's,
    the last minute, 5xx responses and latency."""
    services: dict[str, list[dict[str, Any]]] = {}
    for e in doc["endpoints"]:
        services.setdefault(f"{e['namespace']}/{e['service']}", []).append(e)
    window = f"{doc['window_seconds']:.0f} s"
    return [_service_table(name, endpoints, window) for name, endpoints in services.items()]


def _service_table(name: str, endpoints: list[dict[str, Any]], window: str) -> Table:
    table = Table(title=name, caption=f"last = responses in the last {window}; latency in ms")
    for column, justify in (("pod", "left"), ("endpoint", "left"), ("health", "left"), ("in-flight", "right"),
                            ("requests", "right"), ("share", "right"), ("last", "right"), ("5xx", "right"),
                            ("latency", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    total = sum(e["requests"] for e in endpoints)
    for e in endpoints:
        share = f"{100 * e['requests'] / total:.0f}%" if total else "-"
        table.add_row(e["pod"] or "-", e["endpoint"], _health(e), str(e["inflight"]), str(e["requests"]), share,
                      str(e["requests_last_minute"]), str(e["errors_5xx"]), _latency(e))
    return table


def _health(e: dict[str, Any]) -> str:
    if not e["serving"]:
        return "[dim]removed[/]"
    if e["ejected"]:
        return f"[red]ejected[/] ({e['ejections']}x)"
    if e["health"] == "unhealthy":
        return "[red]unhealthy[/]"
    return f"[green]{e['health']}[/]"


def _latency(e: dict[str, Any]) -> str:
    if e["ewma_ms"] is not None:
        return f"{e['ewma_ms']:.2f} ewma"
    if e["mean_upstream_ms"] is not None:
        return f"{e['mean_upstream_ms']:.2f}"
    return "-"
