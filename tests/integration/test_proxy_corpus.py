"""The shared HTTP desync corpus (aws/http-desync-guardian) sent through the proxy, one entry per test.

How a request is built from an entry (see /work/shared/corpus/README.md):
- request line `METHOD URI VERSION` (`METHOD URI` when the version is empty: HTTP/0.9), then the headers in
  order, `name: value` (`name:value` when the value already starts with whitespace, as the real-life entries
  do). Strings are sent as latin-1 when they fit (so "\\x85" is the octet 0x85), else as UTF-8.
- `Host: corpus.test` is added as the first header when the entry has none: almost no entry has one, and
  without it every HTTP/1.1 entry would be refused for the missing Host, which says nothing about its framing.
- a body is added as a strict parser reads the framing: with a header named exactly Transfer-Encoding whose
  last coding is chunked, a small chunked body; else with a header named exactly Content-Length holding
  digits, that many bytes. Headers with mangled names frame nothing, so they get no body.

Verdicts by tier:
- Severe: a 4xx, then the connection closes, and the backend received no byte at all, although the proxy holds
  a pooled keep-alive connection to it (a warm-up request runs first).
- Ambiguous: either refused like Severe, or forwarded in an unambiguous form: every forwarded header name is
  an RFC 9110 token, no value has a control character, no header reads as a framing header in a CGI-style
  backend (HTTP_TRANSFER_ENCODING from "Transfer_Encoding") without being exactly one, and there is at most
  one framing header. (So "Transfer---Encoding" may be forwarded: no common backend reads it as framing.)
- Compliant and Acceptable: forwarded (2xx from the backend), except the entries in STRICTER, which we refuse
  on purpose (llhttp is strict); each has its reason there.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import RawClient, Received, async_test, chunked, stack

CORPUS = Path(os.environ.get("PYNGRESS_CORPUS") or
              Path(__file__).resolve().parents[3] / "shared" / "corpus" / "http-desync-guardian")

# Compliant/Acceptable entries we refuse by design, with the reason. Anything else refused is a failure.
STRICTER = {
    "Non-RFC, but OK HTTP/0.9": "HTTP/0.9 is refused (400): no headers means no Host and no framing",
    "Empty version, which means HTTP/0.9": "HTTP/0.9 is refused (400)",
    "Unknown but OK HTTP/1.2": "llhttp accepts only HTTP/1.0 and 1.1 (nginx takes 1.x)",
    "No TE/CL headers, some others are non-compliant": "llhttp refuses whitespace before the colon",
    "TE and some others are non-compliant": "llhttp refuses whitespace before the colon",
    "CL and some others are non-compliant": "llhttp refuses whitespace before the colon",
    "A non-essential header with a non-printable character (x01)": "llhttp refuses a name that is no token",
    "Some-Header\\x01": "llhttp refuses a header name that is no token",
    "\\x01Some-Header": "llhttp refuses a header name that is no token",
    "Some-Header: \\x01value": "llhttp refuses control characters in values",
    "Some-Header: value\\x01": "llhttp refuses control characters in values",
    "Extra spaces in version": "llhttp wants CRLF right after the version",
    "Empty URI": "a request line without a target is malformed (RFC 9112 3)",
    "[space] in URI": "a raw space ends the target: the rest is no HTTP version (nginx also says 400)",
    "International in URI": "llhttp refuses raw non-ASCII octets in the target (RFC 3986 wants them escaped)",
    "TE with custom parameters OK": "llhttp refuses parameters on chunked (none are defined; nginx says 501)",
    "Transfer-Encoding with a param: chunked;custom_param": "llhttp refuses parameters on chunked",
}

MAX_BODY = 8 << 20  # larger Content-Length values (the overflow entry) get no body: they must be refused anyway
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _load() -> list[Any]:
    if not CORPUS.is_dir():
        return [pytest.param(None, id="corpus-absent",
                             marks=pytest.mark.skip(reason=f"desync corpus not found at {CORPUS} "
                                                    "(set PYNGRESS_CORPUS to its directory)"))]
    params, seen = [], Counter[str]()
    for path in sorted(CORPUS.glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text(encoding="utf-8")) or ():
            name = f"{path.stem}:{entry['name']}"
            seen[name] += 1
            ident = name if seen[name] == 1 else f"{name}#{seen[name]}"
            params.append(pytest.param(entry, id=ident.encode("unicode_escape").decode("ascii")))
    return params


def _octets(value: object) -> bytes:
    text = str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def build(entry: dict[str, Any]) -> bytes:
    headers = [(_octets(h["name"]), _octets(h["value"])) for h in entry.get("headers") or ()]
    if not any(n.lower() == b"host" for n, _ in headers):
        headers.insert(0, (b"Host", b"corpus.test"))
    version = _octets(entry.get("version") or "")
    line = b" ".join(p for p in (_octets(entry["method"]), _octets(entry.get("uri") or "")) if p is not None)
    line += b" " + version if version else b""
    head = line + b"\r\n" + b"".join(n + (b":" if v[:1] in b" \t" and v else b": ") + v + b"\r\n"
                                     for n, v in headers) + b"\r\n"
    return head + _body(headers)


def _body(headers: list[tuple[bytes, bytes]]) -> bytes:
    te = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    if te:
        last = b",".join(te).split(b",")[-1].split(b";")[0].strip(b" \t").lower()
        return chunked(b"hello corpus") if last == b"chunked" else b""
    cl = [v.strip(b" \t") for n, v in headers if n.lower() == b"content-length"]
    if cl and cl[-1].isdigit() and int(cl[-1]) <= MAX_BODY:
        return b"x" * int(cl[-1])
    return b""


def ambiguity(req: Received) -> str | None:
    """Why the backend could read this forwarded request differently from the proxy, or None."""
    framing = []
    for name, value in req.headers:
        if not TOKEN.fullmatch(name):
            return f"header name {name!r} is not a token"
        if CONTROL.search(value):
            return f"control character in {name}: {value!r}"
        # CGI-style servers (WSGI, FastCGI, PHP) read a header as HTTP_<NAME upper-cased, "-" as "_">: a name
        # that lands on the same variable as a framing header is that header for them.
        if name.upper().replace("-", "_") in ("TRANSFER_ENCODING", "CONTENT_LENGTH"):
            if name.lower() not in ("transfer-encoding", "content-length"):
                return f"{name!r} reads as a framing header in a CGI-style backend"
            framing.append(name.lower())
    if len(framing) > 1:
        return f"more than one framing header: {framing}"
    return None


async def _closed(c: RawClient, method: str) -> bool:
    try:
        rest = await c.read_to_eof(timeout=3.0)
    except TimeoutError:
        return False
    # a refused HEAD gets the generated body all the same (see test_refusal_of_head_request_has_no_body)
    return rest == b"" or method == "HEAD"


@pytest.mark.corpus
@pytest.mark.parametrize("entry", _load())
@async_test
async def test_corpus_entry_gets_verdict_of_its_tier(entry: dict[str, Any]) -> None:
    tier = entry["expected"]["tier"]
    # proxy-body-size off: the corpus judges framing, and its "Large Size OK" entries are compliant requests
    # that a 1m limit (nginx's default and ours) would rightly refuse with 413 for a reason of policy
    async with stack(max_body=0) as s, await s.proxy.client() as c:
        assert (await s.proxy.get("/warm")).status == 200  # a pooled upstream connection, as in production
        warmed = s.backend.bytes_received
        await c.send(build(entry))
        resp = await c.response(entry["method"], timeout=3.0)
        refused = 400 <= resp.status < 500 or resp.status == 505
        closed = refused and await _closed(c, entry["method"])
    requests = s.backend.requests[1:]
    if tier == "Severe" or (tier == "Ambiguous" and refused):
        assert refused, f"{tier} entry answered {resp.status}"
        assert closed, "the connection stayed open after the refusal"
        assert s.backend.bytes_received == warmed, f"forwarded: {s.backend.bytes_received - warmed} bytes"
    elif tier == "Ambiguous":
        assert resp.status == 200, resp
        assert len(requests) == 1
        assert ambiguity(requests[0]) is None, ambiguity(requests[0])
    elif entry["name"] in STRICTER:
        assert refused and closed and s.backend.bytes_received == warmed, STRICTER[entry["name"]]
    else:
        assert resp.status == 200, f"{tier} entry refused with {resp.status}"
        assert len(requests) == 1
