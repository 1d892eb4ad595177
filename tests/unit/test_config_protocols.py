"""backend-protocol (issue 4) and http2-max-concurrent-streams: parsed under both prefixes, problems for bad
values."""

from __future__ import annotations

import pytest
from test_config_annotations import compiled, configmap, ingress


@pytest.mark.parametrize(("value", "expected"), [("GRPC", "GRPC"), ("grpcs", "GRPCS"), (" HTTP ", "HTTP"),
                                                   ("HTTPS", "HTTPS")])
def test_backend_protocol_values(value: str, expected: str) -> None:
    snap = compiled(ingress({"nginx.ingress.kubernetes.io/backend-protocol": value}))
    assert [r.backend_protocol for r in snap.routes] == [expected]
    assert not [p for p in snap.problems if "backend-protocol" in p.field]


def test_backend_protocol_defaults_to_http_and_ours_wins() -> None:
    assert [r.backend_protocol for r in compiled(ingress({})).routes] == ["HTTP"]
    snap = compiled(ingress({"pyngress.io/backend-protocol": "GRPC",
                             "nginx.ingress.kubernetes.io/backend-protocol": "HTTP"}))
    assert [r.backend_protocol for r in snap.routes] == ["GRPC"]


@pytest.mark.parametrize("value", ["FCGI", "AUTO_HTTP", "h2"])
def test_unsupported_backend_protocol_is_a_problem_and_serves_http(value: str) -> None:
    snap = compiled(ingress({"nginx.ingress.kubernetes.io/backend-protocol": value}))
    assert [r.backend_protocol for r in snap.routes] == ["HTTP"]
    [problem] = [p for p in snap.problems if "backend-protocol" in p.field]
    assert problem.severity == "error" and value in problem.message


def test_http2_max_concurrent_streams_from_the_configmap() -> None:
    assert compiled(ingress({})).settings.http2_max_concurrent_streams == 128
    snap = compiled(ingress({}), configmap({"http2-max-concurrent-streams": "16"}))
    assert snap.settings.http2_max_concurrent_streams == 16


def test_the_grpc_and_websocket_examples_load_without_problems() -> None:
    from pathlib import Path

    from pyngress.config import CompileOptions
    from pyngress.sources.files import FileSource

    examples = Path(__file__).resolve().parents[2] / "examples"
    grpc = FileSource([examples / "grpc"], CompileOptions(), _Recorder()).load_initial()
    assert grpc.problems == () and [(r.host, r.backend_protocol) for r in grpc.routes] == [
        ("grpc.example.com", "GRPC")]
    assert len(grpc.backends["grpc-demo/greeter:grpc"].endpoints) == 2
    ws = FileSource([examples / "websocket"], CompileOptions(), _Recorder()).load_initial()
    assert ws.problems == () and [(r.host, r.path) for r in ws.routes] == [("localhost", "/chat")]


class _Recorder:
    def __call__(self, *args: object) -> None:
        pass
