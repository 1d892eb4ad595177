"""Property tests: RouteTable agrees with a brute-force reading of the Ingress rules; normalize_path is safe."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyngress.model import Backend, PathType, Route
from pyngress.routing import RouteTable, normalize_path

RANK = {PathType.EXACT: 0, PathType.PREFIX: 1, PathType.IMPLEMENTATION_SPECIFIC: 2}
BACKEND = Backend("ns/svc:80", "ns", "svc", "80")

segments = st.lists(st.sampled_from(["a", "b", "aa", "a.b"]), max_size=3)


@st.composite
def paths(draw: st.DrawFn) -> str:
    parts = draw(segments)
    trailing = "/" if parts and draw(st.booleans()) else ""
    return "/" + "/".join(parts) + trailing


routes = st.lists(
    st.builds(
        lambda host, path, path_type: Route(host, path, path_type, BACKEND, "ns/ing"),
        st.sampled_from(["a.com", "b.a.com", "*.a.com", "*.b.a.com", ""]),
        paths(),
        st.sampled_from(list(PathType)),
    ),
    max_size=8,
)
request_hosts = st.sampled_from(
    ["a.com", "A.COM:80", "a.com.", "b.a.com", "x.b.a.com", "c.x.b.a.com", "x.org", "", "[::1]:80"]
)


def reference_match(table: list[Route], host: str, path: str) -> Route | None:
    """The rules read literally: exact host, then one-label wildcard, then no host; longest path, Exact first."""
    name = host.lower().partition(":")[0].rstrip(".")
    levels = [
        [r for r in table if r.host == name],
        [r for r in table if r.host.startswith("*.") and "." in name and name.partition(".")[2] == r.host[2:]],
        [r for r in table if r.host == ""],
    ]
    for level in levels:
        hits = [(i, r) for i, r in enumerate(level) if _path_matches(r, path)]
        if hits:
            return min(hits, key=lambda h: (-_length(h[1]), RANK[h[1].path_type], h[0]))[1]
    return None


def _path_matches(route: Route, path: str) -> bool:
    if route.path_type is PathType.EXACT:
        return path == route.path
    stem = route.path.rstrip("/")
    return path == stem or path.startswith(stem + "/")


def _length(route: Route) -> int:
    return len(route.path if route.path_type is PathType.EXACT else route.path.rstrip("/"))


@settings(max_examples=400, deadline=None)
@given(routes, request_hosts, paths())
def test_route_table_agrees_with_the_rules_read_literally(table: list[Route], host: str, path: str) -> None:
    assert RouteTable(table).match(host.encode(), path.encode()) is reference_match(table, host, path)


path_bytes = st.lists(
    st.sampled_from(
        [b"/", b".", b"..", b"a", b"%2e", b"%2E", b"%2f", b"%", b"%41", b"%zz", b"%4", b"1", b"\xc3\xa9", b"//"]
    ),
    max_size=10,
).map(lambda parts: b"/" + b"".join(parts))


@settings(max_examples=400, deadline=None)
@given(path_bytes)
def test_normalized_path_is_canonical(raw: bytes) -> None:
    once = normalize_path(raw)
    assert once.startswith(b"/")
    assert normalize_path(once) == once  # idempotent: nothing left to decode or resolve
    assert b"//" not in once
    assert not any(segment in (b".", b"..") for segment in once.split(b"/"))
