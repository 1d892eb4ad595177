"""The `upstream-hash-by` key: an nginx-style template compiled once, evaluated per request to `bytes`.

Grammar (as nginx's script compiler): literal text with variables `$name` or `${name}`; a name is
`[A-Za-z0-9_]+` (inside braces `-` is also accepted, for `${http_x-user-id}`). Names are case-insensitive, as
nginx lower-cases variable names. Supported variables:

    $remote_addr     the client address, as text
    $host            the request host: lower case, without port (RequestView.host)
    $request_uri     the request-target as received: path and query, not normalised
    $uri             the normalised path, without query
    $http_<name>     a request header; `_` in the name stands for `-` (`$http_x_user_id` reads X-User-Id)
    $cookie_<name>   a cookie from the Cookie header; names compared case-insensitively, first one wins
    $arg_<name>      a query argument; names compared case-insensitively, first one wins; NOT percent-decoded
                     (as nginx's `$arg_`: `?id=a%20b` gives `a%20b`)

A variable with no value (header, cookie or argument absent) gives the empty string, as in nginx. Anything
else, an unknown variable or a malformed `$`, is a `ValueError` naming it: config validation turns it into a
Problem on the route.

Cost: the Cookie header and the query are parsed only by templates that use them, once per evaluation. The
common single-variable templates (`$remote_addr`, `$request_uri`...) compile to one call with no joining.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol


class RequestView(Protocol):
    """What a hash key may read from a request. Attributes may be plain attributes or properties.

    `header(name)` takes a lower-case name and returns the field value, or None when absent. When a request
    carries several fields of one name, the implementation joins them as nginx >= 1.23 does: with `; ` for
    Cookie and `, ` for the others.
    """

    @property
    def client_address(self) -> str: ...

    @property
    def host(self) -> bytes: ...  # lower case, no port

    @property
    def target(self) -> bytes: ...  # the request-target as received (path and query)

    @property
    def path(self) -> bytes: ...  # normalised path, no query

    def header(self, name_lower: bytes) -> bytes | None: ...


Pairs = dict[bytes, bytes]
# A variable's value from the request and, when the template needs them, the parsed cookies and query args.
Getter = Callable[[RequestView, Pairs, Pairs], bytes]

_NAME = re.compile(r"[A-Za-z0-9_]+")
_BRACED_NAME = re.compile(r"[A-Za-z0-9_-]+")
_NO_PAIRS: Pairs = {}


def compile_hash_key(template: str) -> HashKey:
    """Parse `template` once; raise ValueError (naming the culprit) when it is empty or malformed."""
    parts = _parse(template)
    if not parts:
        raise ValueError("upstream-hash-by is empty")
    names = tuple(name for is_var, name in parts if is_var)
    getters = [_variable(text) if is_var else _literal(text) for is_var, text in parts]
    if names == ("remote_addr",) and len(parts) == 1:
        return _RemoteAddrKey(template, names, getters)
    if len(parts) == 1 and not _needs(names, "cookie_") and not _needs(names, "arg_"):
        return _SingleKey(template, names, getters)
    return HashKey(template, names, getters)


class HashKey:
    """A compiled template: `key(request) -> bytes`. `variables` lists the (lower-case) names it reads."""

    __slots__ = ("_cookies", "_getters", "_query", "template", "variables")

    def __init__(self, template: str, variables: tuple[str, ...], getters: list[Getter]) -> None:
        self.template = template
        self.variables = variables
        self._getters = getters
        self._cookies = _needs(variables, "cookie_")
        self._query = _needs(variables, "arg_")

    def __call__(self, req: RequestView) -> bytes:
        cookies = _parse_pairs(req.header(b"cookie"), b";") if self._cookies else _NO_PAIRS
        args = _parse_pairs(req.target.partition(b"?")[2], b"&") if self._query else _NO_PAIRS
        return b"".join([get(req, cookies, args) for get in self._getters])

    def __repr__(self) -> str:
        return f"compile_hash_key({self.template!r})"


class _SingleKey(HashKey):
    __slots__ = ()

    def __call__(self, req: RequestView) -> bytes:
        return self._getters[0](req, _NO_PAIRS, _NO_PAIRS)


class _RemoteAddrKey(HashKey):
    __slots__ = ()

    def __call__(self, req: RequestView) -> bytes:  # the default template: one attribute, one encode
        return req.client_address.encode()


def _needs(names: tuple[str, ...], prefix: str) -> bool:
    return any(name.startswith(prefix) for name in names)


def _parse(template: str) -> list[tuple[bool, str]]:
    """Split into (is_variable, text) parts: literal text as written, variable names lower-cased."""
    parts: list[tuple[bool, str]] = []
    i = 0
    while (dollar := template.find("$", i)) >= 0:
        if dollar > i:
            parts.append((False, template[i:dollar]))
        name, i = _variable_name(template, dollar)
        parts.append((True, name.lower()))
    if i < len(template):
        parts.append((False, template[i:]))
    return parts


def _variable_name(template: str, dollar: int) -> tuple[str, int]:
    """The name after the `$` at `dollar`, and where the text after it starts."""
    start = dollar + 1
    if template.startswith("{", start):
        end = template.find("}", start)
        if end < 0:
            raise ValueError(f"upstream-hash-by {template!r}: missing '}}' after '${{' at position {dollar}")
        name = template[start + 1 : end]
        if not _BRACED_NAME.fullmatch(name):
            raise ValueError(f"upstream-hash-by {template!r}: invalid variable name '${{{name}}}'")
        return name, end + 1
    match = _NAME.match(template, start)
    if match is None:
        raise ValueError(f"upstream-hash-by {template!r}: '$' at position {dollar} is not followed by a name")
    return match.group(), match.end()


def _literal(text: str) -> Getter:
    value = text.encode()
    return lambda req, cookies, args: value


def _variable(name: str) -> Getter:
    simple = _SIMPLE.get(name)
    if simple is not None:
        return simple
    prefix, _, rest = name.partition("_")
    if rest:
        if prefix == "http":
            header = rest.replace("_", "-").encode()
            return lambda req, cookies, args: req.header(header) or b""
        if prefix == "cookie":
            cookie = rest.encode()
            return lambda req, cookies, args: cookies.get(cookie, b"")
        if prefix == "arg":
            arg = rest.encode()
            return lambda req, cookies, args: args.get(arg, b"")
    raise ValueError(
        f"upstream-hash-by: unknown variable ${name}; supported: $remote_addr, $host, $request_uri, $uri, "
        "$http_<header>, $cookie_<name>, $arg_<name>"
    )


_SIMPLE: dict[str, Getter] = {
    "remote_addr": lambda req, cookies, args: req.client_address.encode(),
    "host": lambda req, cookies, args: req.host,
    "request_uri": lambda req, cookies, args: req.target,
    "uri": lambda req, cookies, args: req.path,
}


def _parse_pairs(raw: bytes | None, separator: bytes) -> Pairs:
    """`a=1; b=2` (cookies) or `a=1&b=2` (query) -> {b"a": b"1", ...}; names lower-cased, first one wins."""
    pairs: Pairs = {}
    if raw:
        for item in raw.split(separator):
            name, _, value = item.strip(b" \t").partition(b"=")
            pairs.setdefault(name.lower(), value)
    return pairs
