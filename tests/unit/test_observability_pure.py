"""The pure parts of observability: log line escaping and templates, quantiles, redaction, merging workers."""

from __future__ import annotations

import json

import pytest

from pyngress.config.settings import parse_settings
from pyngress.model import ConfigMap, Meta
from pyngress.observability.accesslog import _pieces
from pyngress.observability.export import merge
from pyngress.observability.logformat import INGRESS_NGINX_FORMAT, check_log_format, json_string, nginx_escape
from pyngress.observability.recorder import DURATION_BUCKETS
from pyngress.observability.status import REDACTED, quantile, redact


def test_json_string_escapes_what_json_needs() -> None:
    assert json_string(b"/plain") == b'"/plain"'
    for raw in (b'/a"b', b"/a\\b", b"/\x01", b"/caf\xc3\xa9", b"/\xff"):
        assert isinstance(json.loads(json_string(raw)), str)
    assert json.loads(json_string(b'/a"b\\c')) == '/a"b\\c'


def test_nginx_escape_default() -> None:
    assert nginx_escape(b"/ok?x=1") == b"/ok?x=1"
    assert nginx_escape(b'/a"b\\c\x7f\xe9') == b"/a\\x22b\\x5Cc\\x7F\\xE9"


def test_log_format_checks_variables() -> None:
    assert check_log_format(f"  {INGRESS_NGINX_FORMAT}  ") == INGRESS_NGINX_FORMAT
    assert check_log_format("${status} $http_x_forwarded_for") == "${status} $http_x_forwarded_for"
    with pytest.raises(ValueError, match=r"\$geoip_country"):
        check_log_format("$status $geoip_country")


def _configmap(data: dict[str, str]) -> ConfigMap:
    return ConfigMap(Meta("pyngress", "ingress"), data)


def test_access_log_configmap_keys() -> None:
    settings, problems = parse_settings(_configmap({"enable-access-log": "false"}))
    assert not settings.enable_access_log and not problems
    settings, _ = parse_settings(_configmap({"disable-access-log": "true"}))  # ingress-nginx's spelling
    assert not settings.enable_access_log
    settings, problems = parse_settings(_configmap({"log-format-upstream": "$nope", "disable-access-log": "x"}))
    assert settings.enable_access_log and settings.log_format_upstream == ""
    assert sorted(p.field for p in problems) == ["data.disable-access-log", "data.log-format-upstream"]
    assert "keeping the default (false)" in next(p.message for p in problems if "disable" in p.field)


def test_pieces_cut_at_line_ends_within_pipe_buf() -> None:
    lines = [b"x" * n + b"\n" for n in (100, 3000, 2000, 5000, 10)]
    data = b"".join(lines)
    pieces = _pieces(data, 4096)
    assert b"".join(pieces) == data
    assert all(p.endswith(b"\n") for p in pieces)
    assert [len(p) for p in pieces] == [3102, 2001, 5001, 11]  # the 5000-byte line goes alone


def test_quantile_interpolates_like_histogram_quantile() -> None:
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    assert quantile(0.5, counts) is None
    counts[DURATION_BUCKETS.index(0.01)] = 10  # ten observations in (0.005, 0.01]
    assert quantile(0.5, counts) == pytest.approx(0.0075)
    assert quantile(0.99, counts) == pytest.approx(0.00995)
    counts[-1] = 1000  # mostly beyond the last bound: reported as the last bound
    assert quantile(0.99, counts) == DURATION_BUCKETS[-1]


def test_redact_key_material_generically() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n"
    doc = {"tls": [{"hosts": ["a.example"], "certificate": "-----BEGIN CERTIFICATE-----", "private_key": pem}],
           "session_cookie_salt": "s", "api_token": "t", "notes": pem, "key": "default/web:80",
           "backends": {"default/secret-store:80": {"key": "default/secret-store:80", "port": "80"}},
           "empty_secret": ""}
    out = redact(doc)
    assert out["tls"][0]["certificate"] == out["tls"][0]["private_key"] == REDACTED
    assert out["tls"][0]["hosts"] == ["a.example"]
    assert out["session_cookie_salt"] == out["api_token"] == out["notes"] == REDACTED
    assert out["key"] == "default/web:80"  # an identity, not key material
    assert out["backends"] == doc["backends"]
    assert out["empty_secret"] == ""
    assert "PRIVATE" not in json.dumps(out)


def _state(pid: int, requests: int, generation: int, ok: bool = True) -> dict[str, object]:
    cell = [200, "GET", requests, [requests] + [0] * 14, 0.5, [requests] + [0] * 14, 0.25, requests,
            [requests] + [0] * 7, 10 * requests, [requests] + [0] * 7, 20 * requests]
    return {"pid": pid, "version": "0", "time": 1.0, "ready": True, "draining": False,
            "config": {"generation": generation, "applied": float(generation), "last_reload_ok": ok,
                       "last_success": float(generation)},
            "series": [[["ns", "ing", "svc", "/", ""], [cell]]],
            "endpoints": {"10.0.0.1:80": {"namespace": "ns", "service": "svc", "pod": "p", "codes":
                                          [0, 0, requests, 0, 0, 0, 0, 0, 0, 0], "failures": 1,
                                          "upstream_seconds": 0.1, "inflight": 1, "ewma": None,
                                          "serving": True, "health": "ready", "ejected": False, "ejections": 0,
                                          "health_source": "x"}},
            "window": {"seconds": 5.0, "endpoints": {"10.0.0.1:80": requests}, "errors": {}, "services": {}},
            "listeners": {"0.0.0.0:80": {"accepted": 2, "active": 1}},
            "events": {"reloads": [[["applied"], 1]], "tls_handshakes": []},
            "access_log": {"lines": requests, "dropped": 0}}


def test_merge_adds_counters_and_takes_the_worst_readiness() -> None:
    merged = merge([_state(1, 3, 4), _state(2, 5, 5, ok=False)])  # type: ignore[list-item]
    (labels, cells), = merged["series"]
    assert labels == ["ns", "ing", "svc", "/", ""]
    assert cells[0][:3] == [200, "GET", 8] and cells[0][3][0] == 8 and cells[0][11] == 160
    endpoint = merged["endpoints"]["10.0.0.1:80"]
    assert endpoint["codes"][2] == 8 and endpoint["inflight"] == 2 and endpoint["failures"] == 2
    assert merged["window"]["endpoints"] == {"10.0.0.1:80": 8}
    assert merged["listeners"] == {"0.0.0.0:80": {"accepted": 4, "active": 2}}
    assert merged["events"]["reloads"] == [[["applied"], 2]]
    assert merged["config"]["generation"] == 5 and merged["config"]["last_reload_ok"] is False
    assert [(w["pid"], w["requests"]) for w in merged["workers"]] == [(1, 3), (2, 5)]
    assert merged["access_log"] == {"lines": 8, "dropped": 0}


def test_routes_and_endpoints_that_left_the_configuration_are_forgotten_later() -> None:
    from time import monotonic

    from pyngress.model import Backend, Endpoint, PathType, Route, Snapshot
    from pyngress.observability.recorder import Recorder
    from pyngress.runtime.state import Dataplane

    a, b = Endpoint("10.0.0.1", 80, name="a"), Endpoint("10.0.0.2", 80, name="b")
    old = Route("", "/old", PathType.PREFIX, Backend("ns/svc:80", "ns", "svc", "80", (a,)), "ns/ing")
    new = Route("", "/new", PathType.PREFIX, Backend("ns/svc:80", "ns", "svc", "80", (b,)), "ns/ing")
    plane = Dataplane(Snapshot(1, routes=(old,)))
    recorder = Recorder()
    recorder.install(plane.serving)
    recorder.install(plane.install(Snapshot(2, routes=(new,))))
    assert set(recorder.endpoints) == {a.key, b.key}
    assert {s.labels[3] for s in recorder.series.values()} == {"", "/old", "/new"}
    recorder.forget(monotonic() - 60)  # left less than a minute ago: still there
    assert set(recorder.endpoints) == {a.key, b.key}
    recorder.forget(monotonic() + 1)
    assert set(recorder.endpoints) == {b.key}
    assert {s.labels[3] for s in recorder.series.values()} == {"", "/new"}  # "" is the unrouted series


@pytest.mark.parametrize("prefix", ["pyngress.io/", "nginx.ingress.kubernetes.io/"])
def test_enable_access_log_annotation(prefix: str) -> None:
    from tests.unit.test_config_annotations import compiled, ingress

    quiet = compiled(ingress({prefix + "enable-access-log": "false"}))
    assert [r.access_log for r in quiet.routes] == [False] and not quiet.problems
    loud = compiled(ingress({}))
    assert [r.access_log for r in loud.routes] == [True]
    bad = compiled(ingress({prefix + "enable-access-log": "sometimes"}))
    assert [r.access_log for r in bad.routes] == [True]
    assert [p.field for p in bad.problems] == [f"metadata.annotations[{prefix}enable-access-log]"]


def test_endpoint_latency_ewma_from_the_window_steps() -> None:
    import math

    from pyngress.observability.recorder import WINDOW_STEP, EndpointCell, Recorder

    recorder = Recorder()
    cell = recorder.endpoints["10.0.0.1:80"] = EndpointCell("10.0.0.1:80", "ns", "svc", "p")
    recorder._age_latencies()
    assert cell.ewma == -1.0  # no response yet: no latency
    cell.codes[2], cell.upstream_sum = 4, 0.004  # 4 responses, 1 ms each
    recorder._age_latencies()
    assert cell.ewma == pytest.approx(0.001)
    cell.codes[2], cell.upstream_sum = 6, 0.004 + 0.006  # 2 more, 3 ms each
    recorder._age_latencies()
    keep = math.exp(-WINDOW_STEP / 10.0)
    assert cell.ewma == pytest.approx(0.001 * keep + 0.003 * (1 - keep))
    recorder._age_latencies()  # a step without responses leaves it
    assert cell.ewma == pytest.approx(0.001 * keep + 0.003 * (1 - keep))
