"""What one worker serves: the Snapshot plus the per-worker live state the hot path needs, behind one reference.

`Dataplane.install` builds a new `Serving` off the hot path (route table, balancers, trusted-proxy networks)
and swaps it in with a single attribute assignment; a request reads `dataplane.serving` once and uses that
object to the end, so a reload never shows a request half of one config and half of another.

Balancers are live state: they are kept by `Route.balancer_key` (backend + way of balancing) across swaps and
told the new endpoints with `update`, so cursors, rings and tables survive reloads. In-flight counts and
latencies live in one `EndpointStatsRegistry` per worker, keyed by endpoint, shared by the load-aware
balancers and kept across reloads too. The default backend is served through a route of its own
(`Serving.default_route`), balanced as the Ingress that named it asks.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pyngress.balancing import Balancer
from pyngress.balancing.factory import make_balancer, needs_context, uses_stats
from pyngress.balancing.hash_key import HashKey, compile_hash_key
from pyngress.balancing.stats import EndpointStatsRegistry
from pyngress.config.health import default_retry
from pyngress.health.selection import effective
from pyngress.model import AffinitySpec, Backend, Endpoint, PathType, ProxySettings, Route, Snapshot
from pyngress.policy.cidr import CidrSet
from pyngress.routing import RouteTable
from pyngress.runtime import http1
from pyngress.runtime.endpoint_swap import swap_endpoints  # issue 6

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ROLE_CACHE_LIMIT = 4096
NO_NETWORKS = CidrSet(())


@dataclass(frozen=True, slots=True)
class Serving:
    snapshot: Snapshot
    table: RouteTable
    default_route: Route | None  # the default backend as a route: used when no rule matches
    balancers: Mapping[str, Balancer]  # by Route.balancer_key
    hash_keys: Mapping[str, HashKey]  # balancer key -> compiled upstream-hash-by template
    # balancer key -> (its cookie affinity, the cookie name as bytes); the balancer is then a CookieAffinity
    cookies: Mapping[str, tuple[AffinitySpec, bytes]]
    tracked: frozenset[str]  # balancer keys whose balancer reads in-flight counts and latencies
    contextual: frozenset[str]  # balancer keys whose pick needs the request or the clock
    stats: EndpointStatsRegistry
    endpoint_keys: frozenset[str]  # every endpoint some route (or the default backend) may send to
    settings: ProxySettings
    # Raw header name (as the client spelled it) -> role. Starts as http1.REQUEST_HEADER_ROLE (with
    # forwarded-for-header mapped in) and learns each new spelling once, so the hot path does one dict lookup
    # per header and no lower(). Bounded: past ROLE_CACHE_LIMIT names we classify without remembering.
    header_roles: dict[bytes, int]
    trusted: tuple[Network, ...]  # proxy-real-ip-cidr, consulted only with use-forwarded-headers
    trust_all: bool  # use-forwarded-headers without proxy-real-ip-cidr: every peer is trusted
    # the same networks as int ranges, for walking X-Forwarded-For (everything when trust_all) (issue 5)
    trusted_cidrs: CidrSet = NO_NETWORKS
    # from settings, read once per header: client-header-buffer-size, and the whole head's bound
    field_limit: int = 8192
    head_limit: int = 32768

    def is_trusted(self, address: str) -> bool:
        if self.trust_all:
            return True
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def classify(self, name: bytes) -> int:
        lower = name.lower()
        role = self.header_roles.get(lower)
        if role is None:
            role = http1.DROP if lower.startswith(b"proxy-") else http1.FORWARD
        if b"_" in name and not self.settings.enable_underscores_in_headers:
            # nginx's default (underscores_in_headers off): "Transfer_Encoding" may read as a framing header
            # to a CGI-style backend that maps "-" and "_" alike, so such headers are dropped.
            role = http1.DROP
        if len(self.header_roles) < ROLE_CACHE_LIMIT:
            self.header_roles[name] = role
        return role


class Dataplane:
    """Holds the current `Serving`; `install` is the only writer, called on the event loop thread."""

    def __init__(self, snapshot: Snapshot, *, rng: random.Random | None = None,
                 select: Callable[[Backend], Sequence[Endpoint]] | None = None) -> None:
        self._rng = rng or random.Random()
        # issue 7: which of a backend's endpoints its balancers get (health, terminating, slow start)
        self.select = select or _ready_endpoints
        self._balancers: dict[str, Balancer] = {}
        self.stats = EndpointStatsRegistry()
        self.serving = self._build(snapshot)

    def install(self, snapshot: Snapshot) -> Serving:
        # issue 6: an endpoint-only change keeps the route table and the untouched balancers (endpoint_swap)
        serving = swap_endpoints(self.serving, snapshot, self._balancers, self.select)
        self.serving = serving = serving if serving is not None else self._build(snapshot)
        return serving

    def _build(self, snapshot: Snapshot) -> Serving:
        routes = list(snapshot.routes)
        default_route = None
        if snapshot.default_backend is not None:
            default_route = Route("", "/", PathType.PREFIX, snapshot.default_backend, "(default backend)",
                                  snapshot.default_balance, snapshot.default_affinity,
                                  https=snapshot.tls.unmatched,  # issue 4: redirect/HSTS per host
                                  flow=snapshot.default_flow, max_body=snapshot.default_max_body,  # issue 5
                                  retry=default_retry(snapshot.settings))  # issue 7: the ConfigMap's policy
            routes.append(default_route)
        balancers: dict[str, Balancer] = {}
        hash_keys: dict[str, HashKey] = {}
        cookies: dict[str, tuple[AffinitySpec, bytes]] = {}
        tracked, contextual = set(), set()
        for route in routes:
            key, spec = route.balancer_key, route.balance
            if key in balancers:
                continue
            endpoints = self.select(route.backend)
            balancer = self._balancers.get(key)
            if balancer is None:
                balancer = make_balancer(spec, route.affinity, endpoints, self._rng, self.stats)
            else:
                balancer.update(endpoints)
            balancers[key] = balancer
            if spec.hash_by:
                hash_keys[key] = compile_hash_key(spec.hash_by)  # validated by config: does not raise here
            if uses_stats(spec):
                tracked.add(key)
            if needs_context(spec, route.affinity):
                contextual.add(key)
            if route.affinity.kind == "cookie":
                cookies[key] = (route.affinity, route.affinity.cookie_name.encode())
        self._balancers = balancers
        endpoint_keys = frozenset(e.key for r in routes for e in r.backend.endpoints)
        self.stats.retain(endpoint_keys)
        settings = snapshot.settings
        return Serving(
            snapshot=snapshot,
            table=RouteTable(snapshot.routes),
            default_route=default_route,
            balancers=MappingProxyType(balancers),
            hash_keys=MappingProxyType(hash_keys),
            cookies=MappingProxyType(cookies),
            tracked=frozenset(tracked),
            contextual=frozenset(contextual),
            stats=self.stats,
            endpoint_keys=endpoint_keys,
            settings=settings,
            header_roles=_header_roles(settings),
            trusted=tuple(ipaddress.ip_network(c, strict=False) for c in settings.trusted_proxies)
            if settings.use_forwarded_headers else (),
            trust_all=settings.use_forwarded_headers and not settings.trusted_proxies,
            trusted_cidrs=_trusted_cidrs(settings),
            field_limit=settings.header_buffer_size,
            head_limit=settings.max_head_size,
        )


def _trusted_cidrs(settings: ProxySettings) -> CidrSet:
    if not settings.use_forwarded_headers:
        return CidrSet(())
    return CidrSet(settings.trusted_proxies or ("0.0.0.0/0", "::/0"))


def _ready_endpoints(backend: Backend) -> Sequence[Endpoint]:
    """Without a health manager: the KEP-1669 rules of `health.selection`, nothing down."""
    return effective(backend.endpoints, ())[0]


def _header_roles(settings: ProxySettings) -> dict[bytes, int]:
    roles = dict(http1.REQUEST_HEADER_ROLE)
    custom = settings.forwarded_for_header.lower().encode("latin-1")
    if custom != b"x-forwarded-for":
        # the client address then comes from the configured header; we still send X-Forwarded-For upstream
        roles[custom] = http1.FORWARDED_FOR
        roles[b"x-forwarded-for"] = http1.DROP
    return roles

