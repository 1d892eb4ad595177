"""Our own checks of a client's HTTP/2 header lists (RFC 9113 8.2, 8.3): what h2 would check, done in one pass.

The client-facing `H2Connection` runs with h2's inbound validation and normalisation off: h2 checks each
field with a chain of Python generators (seven of them, per field), which cost more than all of our own
request handling. This module does the same checks in one loop, and the name checks once per distinct
name (a bounded cache of names seen valid). A request that fails them is malformed (RFC 9113 8.1.1): its
stream is reset with PROTOCOL_ERROR; the connection's other streams go on.

Checked here (as h2 did):
- field names: lower-case tokens (RFC 9110 5.1 tchar; h2 allowed any byte but controls, space, upper case
  and ':'; we allow only tokens, since the name goes into an HTTP/1.1 head), never empty;
- field values: no NUL, CR or LF (what would split an HTTP/1.1 head), no leading or trailing space or tab;
- connection-specific fields (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`,
  `upgrade`) are refused, and `te` only as `trailers`;
- pseudo-headers: only `:method :scheme :path :authority :protocol`, each at most once, all before the
  first regular field; `:method` always; `:scheme` and a non-empty `:path` except for plain CONNECT (which
  must have neither); `:protocol` only with CONNECT (RFC 8441);
- `:authority` or `host` present; `host` at most once and equal to `:authority` when both are given;
- trailers: no pseudo-headers, and the same name and value rules.
Still checked by h2 itself: frame and stream state, HPACK, Content-Length against the DATA received.
Checked later by `request_head.HeadBuilder`: sizes (431, 414), underscores, `proxy-*` fields, CONNECT (405).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_METHOD, _SCHEME, _PATH, _AUTHORITY, _PROTOCOL = 1, 2, 4, 8, 16
_PSEUDO = {b":method": _METHOD, b":scheme": _SCHEME, b":path": _PATH, b":authority": _AUTHORITY,
           b":protocol": _PROTOCOL}
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                                  b"upgrade"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
_SPACE = (0x20, 0x09)
_NAMES_LIMIT = 4096
_valid_names: set[bytes] = set()  # names that passed; bounded, so hostile clients cannot grow it forever


def _name_ok(name: bytes) -> bool:
    if name in _valid_names:
        return True
    if _TOKEN.fullmatch(name) is None or name in _CONNECTION_SPECIFIC:
        return False
    if len(_valid_names) < _NAMES_LIMIT:
        _valid_names.add(name)
    return True


def _value_ok(value: bytes) -> bool:
    return not value or (value[0] not in _SPACE and value[-1] not in _SPACE
                         and _FORBIDDEN_IN_VALUE.search(value) is None)


def request_malformed(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True if a request's header list breaks RFC 9113 8.2/8.3 (see the module docstring)."""
    seen = 0
    regular = False
    method = path = b""
    authority: bytes | None = None
    host: bytes | None = None
    for name, value in headers:
        # _value_ok and _name_ok inlined: this loop runs for every field of every request
        if value and (value[0] in _SPACE or value[-1] in _SPACE or _FORBIDDEN_IN_VALUE.search(value) is not None):
            return True
        if name[:1] == b":":
            bit = _PSEUDO.get(name, 0)
            if not bit or seen & bit or regular:
                return True
            seen |= bit
            if bit == _METHOD:
                method = value
            elif bit == _PATH:
                path = value
            elif bit == _AUTHORITY:
                authority = value
            continue
        regular = True
        if name not in _valid_names and not _name_ok(name):
            return True
        if name == b"host":
            if host is not None:
                return True
            host = value
        elif name == b"te" and value.lower() != b"trailers":
            return True
    if authority is None and host is None:
        return True
    if authority is not None and host is not None and authority != host:
        return True
    return not _pseudo_ok(seen, method, path)


def _pseudo_ok(seen: int, method: bytes, path: bytes) -> bool:
    if not seen & _METHOD:
        return False
    if method == b"CONNECT" and not seen & _PROTOCOL:  # plain CONNECT: :authority only (RFC 9113 8.5)
        return not seen & (_SCHEME | _PATH)
    if seen & _PROTOCOL and method != b"CONNECT":
        return False
    return bool(seen & _SCHEME and seen & _PATH and path)


def trailers_malformed(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True if a trailer section has a pseudo-header or a field that breaks the name/value rules."""
    return any(name[:1] == b":" or not _name_ok(name) or not _value_ok(value) for name, value in headers)
