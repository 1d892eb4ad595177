"""RouteTable: the Ingress v1 path-matching table from the Kubernetes docs, host rules, precedence."""

from __future__ import annotations

import pytest

from pyngress.model import Backend, PathType, Route
from pyngress.routing import RouteTable, canonical_host
from pyngress.routing import table as table_module

EXACT, PREFIX, IMPL = PathType.EXACT, PathType.PREFIX, PathType.IMPLEMENTATION_SPECIFIC


def route(path: str, path_type: PathType = PREFIX, host: str = "") -> Route:
    backend = Backend(f"default/{host or 'any'}{path}:80", "default", "svc", "80")
    return Route(host, path, path_type, backend, "default/ing")


def matched(rules: list[tuple[str, PathType]], request: str, host: bytes = b"foo.com") -> str | None:
    """Which rule ("Type path") the request path matches, None for no match."""
    found = RouteTable([route(p, t) for p, t in rules]).match(host, request.encode())
    return f"{found.path_type.value} {found.path}" if found else None


# Every row of https://kubernetes.io/docs/concepts/services-networking/ingress/#examples
DOCS_TABLE = [
    pytest.param([("/", PREFIX)], "/anything/at/all", "Prefix /", id="prefix-root-matches-all-paths"),
    pytest.param([("/foo", EXACT)], "/foo", "Exact /foo", id="exact-matches-same-path"),
    pytest.param([("/foo", EXACT)], "/bar", None, id="exact-does-not-match-other-path"),
    pytest.param([("/foo", EXACT)], "/foo/", None, id="exact-does-not-match-trailing-slash"),
    pytest.param([("/foo/", EXACT)], "/foo", None, id="exact-with-slash-does-not-match-without"),
    pytest.param([("/foo", PREFIX)], "/foo", "Prefix /foo", id="prefix-matches-itself"),
    pytest.param([("/foo", PREFIX)], "/foo/", "Prefix /foo", id="prefix-matches-with-trailing-slash"),
    pytest.param([("/foo/", PREFIX)], "/foo", "Prefix /foo/", id="prefix-trailing-slash-ignored"),
    pytest.param([("/foo/", PREFIX)], "/foo/", "Prefix /foo/", id="prefix-with-slash-matches-itself"),
    pytest.param([("/aaa/bb", PREFIX)], "/aaa/bbb", None, id="prefix-is-per-element-not-per-char"),
    pytest.param([("/aaa/bbb", PREFIX)], "/aaa/bbb", "Prefix /aaa/bbb", id="prefix-matches-equal-elements"),
    pytest.param([("/aaa/bbb/", PREFIX)], "/aaa/bbb", "Prefix /aaa/bbb/", id="prefix-rule-slash-ignored"),
    pytest.param([("/aaa/bbb", PREFIX)], "/aaa/bbb/", "Prefix /aaa/bbb", id="prefix-request-slash-matches"),
    pytest.param([("/aaa/bbb", PREFIX)], "/aaa/bbb/ccc", "Prefix /aaa/bbb", id="prefix-matches-subpath"),
    pytest.param([("/aaa/bbb", PREFIX)], "/aaa/bbbxyz", None, id="prefix-does-not-match-sibling-segment"),
    pytest.param([("/", PREFIX), ("/aaa", PREFIX)], "/aaa/ccc", "Prefix /aaa", id="longest-prefix-wins"),
    pytest.param(
        [("/", PREFIX), ("/aaa", PREFIX), ("/aaa/bbb", PREFIX)],
        "/aaa/bbb",
        "Prefix /aaa/bbb",
        id="longest-of-three-prefixes-wins",
    ),
    pytest.param(
        [("/", PREFIX), ("/aaa", PREFIX), ("/aaa/bbb", PREFIX)], "/ccc", "Prefix /", id="root-prefix-catches-rest"
    ),
    pytest.param([("/aaa", PREFIX)], "/ccc", None, id="prefix-does-not-match-other-path"),
    pytest.param([("/foo", PREFIX), ("/foo", EXACT)], "/foo", "Exact /foo", id="exact-beats-prefix-of-same-path"),
    pytest.param([("/foo", EXACT), ("/foo", PREFIX)], "/foo/x", "Prefix /foo", id="prefix-serves-exact-misses"),
]


@pytest.mark.parametrize(("rules", "request_path", "expected"), DOCS_TABLE)
def test_kubernetes_docs_path_table(rules: list[tuple[str, PathType]], request_path: str, expected: str) -> None:
    assert matched(rules, request_path) == expected


@pytest.mark.parametrize(
    ("rules", "request_path", "expected"),
    [
        pytest.param([("/foo", IMPL)], "/foo/bar", "ImplementationSpecific /foo", id="impl-specific-is-prefix"),
        pytest.param([("/foo", IMPL)], "/foobar", None, id="impl-specific-is-per-element"),
        pytest.param([("/Foo", EXACT)], "/foo", None, id="exact-is-case-sensitive"),
        pytest.param([("/Foo", PREFIX)], "/foo/x", None, id="prefix-is-case-sensitive"),
        pytest.param([("/foo/", EXACT), ("/foo", PREFIX)], "/foo/", "Exact /foo/", id="longer-exact-beats-prefix"),
        pytest.param([("/foo/", PREFIX), ("/foo", EXACT)], "/foo", "Exact /foo", id="slash-not-longer"),
        pytest.param([("/a", PREFIX), ("/a/b/c", EXACT)], "/a/b/c/d", "Prefix /a", id="exact-not-prefix"),
        pytest.param([("/%7Euser", PREFIX)], "/~user/x", "Prefix /%7Euser", id="rule-path-is-normalised-too"),
    ],
)
def test_path_matching_details(rules: list[tuple[str, PathType]], request_path: str, expected: str | None) -> None:
    assert matched(rules, request_path) == expected


HOST_ROUTES = [
    route("/", host="foo.com"),
    route("/", host="*.foo.com"),
    route("/", host=""),
]


@pytest.mark.parametrize(
    ("host", "expected_rule_host"),
    [
        pytest.param(b"foo.com", "foo.com", id="exact-host"),
        pytest.param(b"FOO.Com", "foo.com", id="host-is-case-insensitive"),
        pytest.param(b"foo.com:8080", "foo.com", id="port-is-ignored"),
        pytest.param(b"foo.com.", "foo.com", id="trailing-dot-is-ignored"),
        pytest.param(b"foo.com.:443", "foo.com", id="trailing-dot-and-port"),
        pytest.param(b"bar.foo.com", "*.foo.com", id="wildcard-matches-one-label"),
        pytest.param(b"Bar.Foo.com:80", "*.foo.com", id="wildcard-with-case-and-port"),
        pytest.param(b"baz.bar.foo.com", "", id="wildcard-does-not-match-two-labels"),
        pytest.param(b"xfoo.com", "", id="wildcard-is-not-a-suffix-match"),
        pytest.param(b"other.org", "", id="unknown-host-gets-no-host-rule"),
        pytest.param(b"", "", id="empty-host-gets-no-host-rule"),
        pytest.param(b"[::1]:8080", "", id="ipv6-literal-with-port"),
        pytest.param(b"10.0.0.1:80", "", id="ipv4-with-port"),
    ],
)
def test_host_selection(host: bytes, expected_rule_host: str) -> None:
    found = RouteTable(HOST_ROUTES).match(host, b"/x")
    assert found is not None
    assert found.host == expected_rule_host


def test_wildcard_does_not_match_its_bare_parent() -> None:
    table = RouteTable([route("/", host="*.foo.com")])
    assert table.match(b"foo.com", b"/") is None
    assert table.match(b"a.foo.com", b"/") is not None


def test_exact_host_falls_through_to_wildcard_then_no_host() -> None:
    table = RouteTable([route("/api", host="foo.com"), route("/web", host="*.foo.com"), route("/", host="")])
    assert table.match(b"foo.com", b"/api/x").host == "foo.com"  # type: ignore[union-attr]
    assert table.match(b"www.foo.com", b"/web").host == "*.foo.com"  # type: ignore[union-attr]
    assert table.match(b"foo.com", b"/other").host == ""  # type: ignore[union-attr]


def test_exact_host_level_wins_even_with_a_shorter_path() -> None:
    table = RouteTable([route("/", host="foo.com"), route("/api/v1", host="")])
    found = table.match(b"foo.com", b"/api/v1")
    assert found is not None and (found.host, found.path) == ("foo.com", "/")


def test_no_rule_matching_gives_none() -> None:
    table = RouteTable([route("/api", host="foo.com")])
    assert table.match(b"foo.com", b"/web") is None
    assert table.match(b"bar.com", b"/api") is None


def test_empty_table_matches_nothing() -> None:
    assert RouteTable([]).match(b"foo.com", b"/") is None


def test_equal_rules_keep_route_order() -> None:
    first, second = route("/foo"), route("/foo/")
    assert RouteTable([first, second]).match(b"h", b"/foo/x") is first
    assert RouteTable([second, first]).match(b"h", b"/foo/x") is second


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"Foo.COM:8080", b"foo.com"),
        (b"foo.com.", b"foo.com"),
        (b"[::1]:443", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"[broken", b"[broken"),
        (b"", b""),
    ],
)
def test_canonical_host(raw: bytes, canonical: bytes) -> None:
    assert canonical_host(raw) == canonical


def test_memo_is_bounded_and_stays_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "MEMO_LIMIT", 8)
    table = RouteTable([route("/", host="foo.com"), route("/", host="")])
    for i in range(100):
        assert table.match(f"random{i}.example".encode(), b"/").host == ""  # type: ignore[union-attr]
    assert len(table._memo) <= 8 + 1
    assert table.match(b"FOO.com:1", b"/").host == "foo.com"  # type: ignore[union-attr]
