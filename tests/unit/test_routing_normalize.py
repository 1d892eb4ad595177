"""normalize_path: percent-decoding, dot segments and slash merging before route matching."""

from __future__ import annotations

import pytest

from pyngress.model import Backend, PathType, Route
from pyngress.routing import RouteTable, normalize_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        pytest.param(b"/public/../admin", b"/admin", id="dot-dot-climbs-one-segment"),
        pytest.param(b"/a/./b", b"/a/b", id="dot-segment-is-dropped"),
        pytest.param(b"/a//b///c", b"/a/b/c", id="slashes-are-merged"),
        pytest.param(b"/a/b/..", b"/a/", id="trailing-dot-dot-leaves-directory"),
        pytest.param(b"/a/b/.", b"/a/b/", id="trailing-dot-leaves-directory"),
        pytest.param(b"/..", b"/", id="dot-dot-at-root-is-root"),
        pytest.param(b"/../../admin", b"/admin", id="climbing-above-root-stops-at-root"),
        pytest.param(b"/%2e%2e/admin", b"/admin", id="encoded-dot-dot-is-resolved"),
        pytest.param(b"/public/%2E%2E/admin", b"/admin", id="upper-case-encoded-dot-dot"),
        pytest.param(b"/%61dmin", b"/admin", id="encoded-letter-is-decoded"),
        pytest.param(b"/%7Euser", b"/~user", id="encoded-unreserved-is-decoded"),
        pytest.param(b"/a%3Bb%40c", b"/a;b@c", id="encoded-sub-delims-are-decoded"),
        pytest.param(b"/caf%C3%A9", "/café".encode(), id="encoded-utf8-is-decoded"),
        pytest.param(b"/a%2F..%2Fadmin", b"/a%2F..%2Fadmin", id="encoded-slash-is-not-a-boundary"),
        pytest.param(b"/a%2fb", b"/a%2Fb", id="kept-escape-is-upper-cased"),
        pytest.param(b"/100%25", b"/100%25", id="encoded-percent-stays-encoded"),
        pytest.param(b"/%252e%252e/x", b"/%252e%252e/x", id="no-double-decoding"),
        pytest.param(b"/a%20b%3Fc%23d", b"/a%20b%3Fc%23d", id="space-question-hash-stay-encoded"),
        pytest.param(b"/bad%zz%4", b"/bad%25zz%254", id="stray-percent-is-encoded"),
        pytest.param(b"/%%41", b"/%25A", id="stray-percent-cannot-form-a-new-escape"),
        pytest.param(b"/.well-known/acme", b"/.well-known/acme", id="dot-file-is-not-a-dot-segment"),
        pytest.param(b"/a/..b/c", b"/a/..b/c", id="dot-dot-prefix-is-not-a-dot-segment"),
        pytest.param(b"//", b"/", id="double-slash-root"),
        pytest.param(b"*", b"*", id="asterisk-form-is-untouched"),
        pytest.param(b"", b"", id="empty-is-untouched"),
    ],
)
def test_normalize_path(raw: bytes, normal: bytes) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize("path", [b"/", b"/api/v1/users/42", b"/static/app.js", b"/a.b/c", b""])
def test_canonical_path_is_returned_as_the_same_object(path: bytes) -> None:
    assert normalize_path(path) is path


@pytest.mark.parametrize("raw", [b"/%", b"/%%%", b"/..%", b"\xff/../\x00", b"/%2e%2e%2f", b"%2e%2e/x"])
def test_normalize_never_raises(raw: bytes) -> None:
    assert isinstance(normalize_path(raw), bytes)


def test_normalize_is_idempotent_on_tricky_paths() -> None:
    for raw in (b"/a/%2e%2e/b//c/./", b"/%2e/%2E%2e/x", b"/a%2F%2e%2e/b", b"/x/%252e/../y"):
        once = normalize_path(raw)
        assert normalize_path(once) == once


def test_dot_dot_cannot_route_around_an_admin_rule() -> None:
    backend = Backend("default/x:80", "default", "x", "80")
    admin = Route("", "/admin", PathType.PREFIX, backend, "default/admin")
    public = Route("", "/public", PathType.PREFIX, backend, "default/public")
    table = RouteTable([admin, public])
    assert table.match(b"h", normalize_path(b"/public/../admin/users")) is admin
    assert table.match(b"h", normalize_path(b"/public/%2e%2e/admin")) is admin
