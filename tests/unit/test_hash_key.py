"""upstream-hash-by templates: every variable, literals, missing values, malformed templates."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pyngress.balancing.hash_key import RequestView, compile_hash_key


@dataclass
class Request:
    client_address: str = "10.0.0.7"
    host: bytes = b"shop.example.com"
    target: bytes = b"/a/../cart?id=42&Lang=de&id=43&flag&q=a%20b"
    path: bytes = b"/cart"
    headers: dict[bytes, bytes] = field(default_factory=dict)
    lookups: list[bytes] = field(default_factory=list)

    def header(self, name_lower: bytes) -> bytes | None:
        self.lookups.append(name_lower)
        return self.headers.get(name_lower)


def key(template: str, req: RequestView | None = None) -> bytes:
    return compile_hash_key(template)(req or Request())


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$remote_addr", b"10.0.0.7"),
        ("$host", b"shop.example.com"),
        ("$request_uri", b"/a/../cart?id=42&Lang=de&id=43&flag&q=a%20b"),
        ("$uri", b"/cart"),
        ("${remote_addr}", b"10.0.0.7"),
        ("$REMOTE_ADDR", b"10.0.0.7"),
    ],
)
def test_request_variables(template: str, expected: bytes) -> None:
    assert key(template) == expected


def test_remote_addr_of_an_ipv6_client() -> None:
    assert key("$remote_addr", Request(client_address="2001:db8::1")) == b"2001:db8::1"


def test_header_underscores_stand_for_dashes() -> None:
    req = Request(headers={b"x-user-id": b"u-17"})
    assert key("$http_x_user_id", req) == b"u-17"
    assert req.lookups == [b"x-user-id"]


def test_header_name_is_case_insensitive_and_braces_may_use_dashes() -> None:
    req = Request(headers={b"x-user-id": b"u-17"})
    assert key("$HTTP_X_User_Id", req) == key("${http_x-user-id}", req) == b"u-17"


def test_cookie_by_name_case_insensitive_first_wins() -> None:
    req = Request(headers={b"cookie": b"theme=dark; Session=abc; session=later;flag"})
    assert key("$cookie_session", req) == b"abc"
    assert key("$cookie_theme", req) == b"dark"
    assert key("$cookie_flag", req) == b""


def test_query_argument_first_wins_and_is_not_decoded() -> None:
    assert key("$arg_id") == b"42"
    assert key("$arg_lang") == b"de"
    assert key("$arg_q") == b"a%20b"
    assert key("$arg_flag") == b""


def test_missing_values_are_empty() -> None:
    req = Request(target=b"/cart", headers={})
    assert key("[$http_x_user][$cookie_s][$arg_id]", req) == b"[][][]"


def test_literal_text_between_variables() -> None:
    req = Request(headers={b"x-tenant": b"t1", b"cookie": b"s=9"})
    assert key("${host}-$http_x_tenant:${cookie_s}/$arg_id!", req) == b"shop.example.com-t1:9/42!"


def test_literal_only_template_is_allowed() -> None:
    assert key("everyone") == b"everyone"


def test_non_ascii_literal_is_utf8() -> None:
    assert key("é$uri") == "é".encode() + b"/cart"


def test_cookie_header_is_read_only_when_the_template_needs_it() -> None:
    req = Request(headers={b"cookie": b"s=1"})
    key("$remote_addr$uri$arg_id", req)
    assert req.lookups == []
    key("$cookie_s$cookie_t", req)
    assert req.lookups == [b"cookie"]  # parsed once for both cookies


def test_compiled_key_reports_its_template_and_variables() -> None:
    compiled = compile_hash_key("${host}x$Arg_ID")
    assert compiled.template == "${host}x$Arg_ID"
    assert compiled.variables == ("host", "arg_id")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "empty"),
        ("$remote_adr", r"unknown variable \$remote_adr"),
        ("$request_method", r"unknown variable \$request_method"),
        ("$http_", r"unknown variable \$http_"),
        ("$cookie_", r"unknown variable \$cookie_"),
        ("price: $", "'\\$' at position 7 is not followed by a name"),
        ("$ host", "'\\$' at position 0"),
        ("${host", "missing '}'"),
        ("${}", "invalid variable name"),
        ("${ho st}", "invalid variable name"),
    ],
)
def test_malformed_templates_are_rejected_naming_the_problem(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_hash_key(template)


def test_bare_name_ends_at_the_first_non_name_character() -> None:
    # as nginx: `$host-x` is $host then "-x"; `$http_x-user` is $http_x then "-user"
    req = Request(headers={b"x": b"X"})
    assert key("$host-x", req) == b"shop.example.com-x"
    assert key("$http_x-user", req) == b"X-user"
