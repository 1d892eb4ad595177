"""Golden cases: manifests in golden/<case>.yaml -> golden/<case>.expected.

The expected text is what `pyngress check` prints (format_check), then the non-default settings, then where
each request of the case's `GoldenRequests` document is routed by a RouteTable built from the Snapshot. The
loader ignores the GoldenRequests document like any unknown kind, which the cases also test.

To accept a deliberate change: PYNGRESS_UPDATE_GOLDEN=1 pytest tests/unit/test_config_golden.py, then review
the diff of the .expected files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from pyngress.config import CompileOptions, build_from_paths, format_check
from pyngress.model import ProxySettings, Snapshot
from pyngress.routing import RouteTable, normalize_path

GOLDEN_DIR = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN_DIR.glob("*.yaml"))


def render(case: Path, snapshot: Snapshot) -> str:
    return format_check(snapshot) + _settings(snapshot.settings) + _routing(case, snapshot)


def _settings(settings: ProxySettings) -> str:
    defaults = ProxySettings()
    changed = [
        f"{f.name}={getattr(settings, f.name)!r}"
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) != getattr(defaults, f.name)
    ]
    return f"\nsettings changed: {', '.join(changed) or 'none'}\n"


def _routing(case: Path, snapshot: Snapshot) -> str:
    header = next(yaml.safe_load_all(case.read_text()))
    table = RouteTable(snapshot.routes)
    lines = ["", "routing:"]
    for request in header["requests"]:
        host, path = request.split(" ")
        route = table.match(host.encode(), normalize_path(path.encode()))
        if route is not None:
            target = f"{route.backend.key} (rule {route.host or '*'} {route.path} {route.path_type.value})"
        elif snapshot.default_backend is not None:
            target = f"{snapshot.default_backend.key} (default backend)"
        else:
            target = "404"
        lines.append(f"  {request} -> {target}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_golden(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN_DIR)  # so that sources print as "basic.yaml", the same on every machine
    snapshot = build_from_paths([case.name], CompileOptions())
    actual = render(case, snapshot)
    expected_file = case.with_suffix(".expected")
    if os.environ.get("PYNGRESS_UPDATE_GOLDEN"):
        expected_file.write_text(actual)
    assert actual == expected_file.read_text()


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 3
    assert all(case.with_suffix(".expected").exists() for case in CASES)


def test_golden_compile_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN_DIR)
    first = build_from_paths([c.name for c in CASES], CompileOptions(), version=1)
    second = build_from_paths([c.name for c in reversed(CASES)], CompileOptions(), version=1)
    assert first.routes == second.routes and first.backends == second.backends
