"""`RouteTable`: Ingress v1 host and path matching, indexed at build time so that a match costs well under 1 µs.

Semantics (https://kubernetes.io/docs/concepts/services-networking/ingress/#examples and the path table there):

Host. The Host header is compared case-insensitively, without its port ("[::1]:8080" keeps its brackets and
loses ":8080") and without a trailing dot ("foo.com." is foo.com). A rule host "*.foo.com" matches exactly one
extra label: bar.foo.com, not foo.com, not baz.bar.foo.com. A rule without host matches every host.
Precedence, with fall-through: the rules of the exact host are tried first; if none of their paths matches,
the wildcard host's rules, then the no-host rules; no match at all is the caller's default backend (or 404).
Kubernetes says a request that matches no rule of a host goes to the default backend, and Ingresses for one
host may come from different teams, so falling through to the wildcard and catch-all rules is what lets a
"*.example.com" or no-host Ingress keep serving paths the exact host's Ingress does not mention.
(ingress-nginx differs: a server block for the exact host shadows the catch-all entirely.)

Path. Exact: byte equality, case-sensitive, "/foo" does not match "/foo/". Prefix: by "/"-separated elements:
"/aaa/bbb" matches "/aaa/bbb", "/aaa/bbb/" and "/aaa/bbb/ccc", not "/aaa/bbbxyz"; a trailing "/" in the rule is
ignored ("/foo/" matches "/foo"); "/" matches every path. ImplementationSpecific is Prefix. Within one host
level the longest path wins (a Prefix counts without its trailing "/") and on equal length Exact beats
Prefix, which beats ImplementationSpecific; remaining ties (Prefix "/foo" and "/foo/") keep the Snapshot order.

The query string takes no part: the caller passes the path without it, normalised (`normalize_path`); rule
paths are normalised the same way here.

Cost. `match` does one dict lookup on the raw Host header (memoised; see `_lookup`), then scans the candidate
list of that host, pre-sorted so the first hit is the answer: each candidate is one `==` and at most one
`startswith`, nothing is allocated. The cost does not grow with the number of hosts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pyngress.model import PathType, Route
from pyngress.routing.normalize import normalize_path

# (path to compare with ==, prefix to compare with startswith or None for Exact, route)
_Candidate = tuple[bytes, bytes | None, Route]
_TYPE_RANK = {PathType.EXACT: 0, PathType.PREFIX: 1, PathType.IMPLEMENTATION_SPECIFIC: 2}

# Raw Host header values remembered; bounded because the header is chosen by the client.
MEMO_LIMIT = 4096


class RouteTable:
    """Read-only index of routes, built by the control plane, shared by every request."""

    __slots__ = ("_by_host", "_catch_all", "_memo", "_wildcard")

    def __init__(self, routes: Iterable[Route]) -> None:
        exact: defaultdict[bytes, list[Route]] = defaultdict(list)
        wildcard: defaultdict[bytes, list[Route]] = defaultdict(list)
        catch_all: list[Route] = []
        for route in routes:
            host = route.host.lower().encode()
            if host.startswith(b"*."):
                wildcard[host[2:]].append(route)
            elif host:
                exact[host].append(route)
            else:
                catch_all.append(route)
        self._catch_all = _candidates(catch_all)
        # each host's full fall-through list, concatenated once here rather than walked level by level per call
        self._wildcard = {parent: _candidates(rs) + self._catch_all for parent, rs in wildcard.items()}
        self._by_host = {
            host: _candidates(rs) + self._wildcard.get(_parent(host), self._catch_all)
            for host, rs in exact.items()
        }
        self._memo: dict[bytes, tuple[_Candidate, ...]] = dict(self._by_host)

    def match(self, host: bytes, path: bytes) -> Route | None:
        """The route for a request, or None. `host`: raw Host header; `path`: normalised, no query."""
        candidates = self._memo.get(host)
        if candidates is None:
            candidates = self._lookup(host)
        for whole, prefix, route in candidates:
            if path == whole or (prefix is not None and path.startswith(prefix)):
                return route
        return None

    def _lookup(self, raw: bytes) -> tuple[_Candidate, ...]:
        host = canonical_host(raw)
        candidates = self._by_host.get(host)
        if candidates is None:
            candidates = self._wildcard.get(_parent(host), self._catch_all)
        if len(self._memo) >= MEMO_LIMIT + len(self._by_host):
            # a client sending random Host values fills the memo: start over rather than grow without bound
            self._memo = dict(self._by_host)
        self._memo[raw] = candidates
        return candidates


def canonical_host(raw: bytes) -> bytes:
    """Host header -> the form rule hosts are stored in: lower case, no port, no trailing dot."""
    host = raw.lower()
    if host.startswith(b"["):  # IPv6 literal: the port, if any, follows the "]"
        end = host.find(b"]")
        return host[: end + 1] if end >= 0 else host
    colon = host.find(b":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(b".")


def _parent(host: bytes) -> bytes:
    """What a wildcard rule covering `host` is stored under: "bar.foo.com" -> "foo.com" ("*.foo.com")."""
    return host.partition(b".")[2]


def _candidates(routes: list[Route]) -> tuple[_Candidate, ...]:
    """One host level's routes as match candidates, in match order (see the module docstring)."""
    ranked = []
    for order, route in enumerate(routes):
        path = normalize_path(route.path.encode())
        if route.path_type is PathType.EXACT:
            candidate: _Candidate = (path, None, route)
        else:
            stem = path.rstrip(b"/")  # "/foo/" and "/foo" both match "/foo" and "/foo/..."; "/" becomes b""
            candidate = (stem, stem + b"/", route)
        ranked.append(((-len(candidate[0]), _TYPE_RANK[route.path_type], order), candidate))
    ranked.sort(key=lambda item: item[0])
    return tuple(candidate for _, candidate in ranked)
