"""FileSource: reload on change or SIGHUP, no-op on an unchanged result, last good config kept on a broken file.

Tests that go through `run()` wait on an asyncio.Event set by `apply` (bounded by wait_for), never on sleeps.
Tests of one decision call `poll()` directly, which is exactly one iteration of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pyngress.config import CompileOptions
from pyngress.model import Problem, Snapshot
from pyngress.sources import files
from pyngress.sources.files import FileSource, Outcome, is_unreadable_input, signature

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9001}]
endpoints: [{addresses: ["127.0.0.1"]}]
"""

INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  ingressClassName: pyngress
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: PATH, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
"""

LOGGER = "test.files"


class Recorder:
    """The `apply` callback: remembers every Snapshot and wakes the test."""

    def __init__(self) -> None:
        self.applied: list[Snapshot] = []
        self.event = asyncio.Event()

    def __call__(self, snapshot: Snapshot) -> None:
        self.applied.append(snapshot)
        self.event.set()

    async def next(self) -> Snapshot:
        await asyncio.wait_for(self.event.wait(), timeout=5)
        self.event.clear()
        return self.applied[-1]


def write(path: Path, text: str) -> None:
    """Write and move mtime forward by a second, so the change shows even on a coarse-timestamp file system."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / "nested").mkdir()
    write(tmp_path / "services.yaml", SERVICE)
    write(tmp_path / "nested" / "ingress.yml", INGRESS.replace("PATH", "/"))
    return tmp_path


def make_source(root: Path, recorder: Recorder, interval: float = 0.05) -> FileSource:
    source = FileSource([root], CompileOptions(), recorder, interval=interval, log=logging.getLogger(LOGGER))
    assert source.load_initial().version == 1
    return source


@contextlib.asynccontextmanager
async def running(source: FileSource) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def paths_of(snapshot: Snapshot) -> list[str]:
    return [r.path for r in snapshot.routes]


def test_load_initial_builds_version_1_and_logs_each_problem(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    write(tmp_path / "ingress.yaml", INGRESS.replace("PATH", "/"))  # its Service is missing
    snapshot = FileSource([tmp_path], CompileOptions(), Recorder(), log=logging.getLogger(LOGGER)).load_initial()
    assert snapshot.version == 1 and snapshot.problems
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [str(p) for p in snapshot.problems]
    assert all("ingress.yaml" in w and "Ingress shop/web" in w for w in warnings)
    assert any("configuration version 1 applied: 1 routes, 1 backends" in r.getMessage() for r in caplog.records)


async def test_changed_file_is_applied_once_as_version_2(manifests: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder = Recorder()
    source = make_source(manifests, recorder)
    async with running(source):
        write(manifests / "nested" / "ingress.yml", INGRESS.replace("PATH", "/shop"))
        snapshot = await recorder.next()
    assert snapshot.version == 2 and paths_of(snapshot) == ["/shop"]
    assert await source.poll() is Outcome.UNCHANGED_FILES
    assert recorder.applied == [snapshot] and source.current is snapshot
    assert "configuration version 2 applied: 1 routes, 1 backends, 0 problems" in caplog.messages


async def test_rewrite_with_same_content_applies_nothing(manifests: Path) -> None:
    recorder = Recorder()
    source = make_source(manifests, recorder)
    first = source.current
    write(manifests / "services.yaml", SERVICE)
    assert await source.poll() is Outcome.UNCHANGED_CONFIG
    assert recorder.applied == [] and source.current is first


async def test_broken_yaml_is_rejected_and_the_last_good_config_keeps_serving(
        manifests: Path, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    source = make_source(manifests, recorder)
    first = source.current
    write(manifests / "services.yaml", SERVICE + "---\nkind: Service\nmetadata: {name: [oops\n")
    assert await source.poll() is Outcome.REJECTED
    assert recorder.applied == [] and source.current is first
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith("rejected configuration: ") and "services.yaml" in error
    assert "YAML syntax error" in error and error.endswith("; still serving version 1")
    assert await source.poll() is Outcome.UNCHANGED_FILES  # rejected once, not again at every poll
    write(manifests / "services.yaml", SERVICE)
    write(manifests / "nested" / "ingress.yml", INGRESS.replace("PATH", "/fixed"))
    assert await source.poll() is Outcome.APPLIED
    assert recorder.applied[-1].version == 2 and paths_of(recorder.applied[-1]) == ["/fixed"]


async def test_after_a_rejected_json_file_the_loop_applies_the_fix(manifests: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    source = make_source(manifests, recorder)
    write(manifests / "extra.json", '{"kind": "Service",')
    write(manifests / "nested" / "ingress.yml", INGRESS.replace("PATH", "/later"))
    assert await source.poll() is Outcome.REJECTED
    assert any("JSON syntax error" in m and m.endswith("still serving version 1") for m in caplog.messages)
    async with running(source):
        (manifests / "extra.json").unlink()
        snapshot = await recorder.next()
    assert [s.version for s in recorder.applied] == [2] and paths_of(snapshot) == ["/later"]


async def test_request_reload_rebuilds_without_waiting_for_the_interval(manifests: Path) -> None:
    recorder = Recorder()
    source = make_source(manifests, recorder, interval=3600)
    async with running(source):
        write(manifests / "nested" / "ingress.yml", INGRESS.replace("PATH", "/now"))
        source.request_reload()
        snapshot = await recorder.next()
    assert snapshot.version == 2 and paths_of(snapshot) == ["/now"]


async def test_new_and_deleted_files_are_changes(manifests: Path) -> None:
    recorder = Recorder()
    source = make_source(manifests, recorder)
    other = INGRESS.replace("name: web, namespace", "name: other, namespace").replace("PATH", "/other")
    write(manifests / "nested" / "other.yaml", other)
    assert await source.poll() is Outcome.APPLIED
    assert sorted(paths_of(recorder.applied[-1])) == ["/", "/other"]
    (manifests / "nested" / "other.yaml").unlink()
    assert await source.poll() is Outcome.APPLIED
    assert [s.version for s in recorder.applied] == [2, 3] and paths_of(recorder.applied[-1]) == ["/"]


async def test_a_compiler_exception_is_rejected_not_raised(manifests: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    source = make_source(manifests, recorder)

    def broken(*args: object, **kwargs: object) -> Snapshot:
        raise RuntimeError("bug")

    monkeypatch.setattr(files, "build_from_paths", broken)
    assert await source.poll(force=True) is Outcome.REJECTED
    assert recorder.applied == []
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "internal error while compiling (RuntimeError('bug'))" in record.getMessage()
    assert record.exc_info is not None  # the traceback is logged: it is a bug to report


def test_signature_sees_manifest_files_recursively_and_nothing_else(manifests: Path) -> None:
    write(manifests / "README.md", "not a manifest")
    names = [Path(entry[0]).relative_to(manifests).as_posix() for entry in signature([manifests])]
    assert names == ["nested/ingress.yml", "services.yaml"]
    assert signature([manifests / "missing.yaml"]) == ()
    explicit = manifests / "README.md"
    assert [Path(e[0]) for e in signature([explicit])] == [explicit]  # a file named explicitly always counts


def test_signature_changes_when_a_file_is_replaced_by_rename(manifests: Path) -> None:
    target = manifests / "services.yaml"
    before = signature([manifests])
    stamp = target.stat().st_mtime_ns
    replacement = manifests / "services.tmp"
    replacement.write_text(SERVICE)
    os.utime(replacement, ns=(stamp, stamp))
    os.replace(replacement, target)  # same content, size and mtime: only the inode differs
    assert signature([manifests]) != before


@pytest.mark.parametrize(("problem", "unreadable"), [
    (Problem("file", "", "a.json", "", "JSON syntax error: ..."), True),
    (Problem("file", "", "a.yaml", "", "cannot read: permission denied"), True),
    (Problem("document", "", "2", "", "YAML syntax error at line 3, column 1: ..."), True),
    (Problem("document", "", "2", "", "not a mapping (a Kubernetes object)"), False),
    (Problem("Ingress", "shop", "web", "spec.rules[0]", "syntax error in path"), False),
])
def test_only_whole_file_load_problems_reject_a_config(problem: Problem, unreadable: bool) -> None:
    assert is_unreadable_input(problem) is unreadable


def test_the_shipped_examples_load_without_problems() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    snapshot = FileSource([examples], CompileOptions(), Recorder()).load_initial()
    assert snapshot.problems == ()
    # the shop walk-through's routes (examples/<topic>/ add their own, in their own namespaces)
    assert sorted((r.host, r.path) for r in snapshot.routes if r.ingress.startswith("shop/")) == [
        ("*.preview.example.com", "/"), ("admin.example.com", "/"), ("shop.example.com", "/"),
        ("shop.example.com", "/api"), ("shop.example.com", "/api/v1/health")]
    assert snapshot.default_backend is not None and snapshot.default_backend.key == "shop/fallback:http"
    api = snapshot.backends["shop/api:http"].endpoints
    assert [e.key for e in api if not e.terminating] == ["127.0.0.1:9002", "127.0.0.1:9003"]
    assert [e.key for e in api if e.terminating] == ["127.0.0.1:9006"]  # serving && terminating: a fallback
    assert snapshot.settings.proxy_read_timeout == 30.0 and snapshot.settings.keep_alive == 60.0
    assert snapshot.tls.hosts == {"secure.example.com": "tls-example/secure-tls"}  # examples/tls
    catalog = snapshot.backends["health-example/catalog:http"].health  # examples/health
    assert catalog.active is not None and catalog.active.path == "/status/200" and catalog.slow_start == 20.0
