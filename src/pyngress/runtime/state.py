"""What one worker serves: the Snapshot plus the per-worker live state the hot path needs, behind one reference.

`Dataplane.install` builds a new `Serving` off the hot path (route table, balancers, trusted-proxy networks)
and swaps it in with a single attribute assignment; a request reads `dataplane.serving` once and uses that
object to the end, so a reload never shows a request half of one config and half of another.

Balancers are live state: they are kept by Backend key across swaps and told the new endpoints with `update`,
so round-robin cursors (and, later, counters) survive reloads.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pyngress.balancing import Balancer, RoundRobin
from pyngress.model import Backend, ProxySettings, Snapshot
from pyngress.routing import RouteTable
from pyngress.runtime import http1

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ROLE_CACHE_LIMIT = 4096
BalancerFactory = Callable[[Backend, random.Random], Balancer]


def round_robin(backend: Backend, rng: random.Random) -> Balancer:
    return RoundRobin(backend.endpoints, rng)


@dataclass(frozen=True, slots=True)
class Serving:
    snapshot: Snapshot
    table: RouteTable
    balancers: Mapping[str, Balancer]
    settings: ProxySettings
    # Raw header name (as the client spelled it) -> role. Starts as http1.REQUEST_HEADER_ROLE (with
    # forwarded-for-header mapped in) and learns each new spelling once, so the hot path does one dict lookup
    # per header and no lower(). Bounded: past ROLE_CACHE_LIMIT names we classify without remembering.
    header_roles: dict[bytes, int]
    trusted: tuple[Network, ...]  # proxy-real-ip-cidr, consulted only with use-forwarded-headers
    trust_all: bool  # use-forwarded-headers without proxy-real-ip-cidr: every peer is trusted

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

    def endpoint_keys(self) -> set[str]:
        return {e.key for b in self.snapshot.backends.values() for e in b.endpoints}


class Dataplane:
    """Holds the current `Serving`; `install` is the only writer, called on the event loop thread."""

    def __init__(self, snapshot: Snapshot, *, rng: random.Random | None = None,
                 factory: BalancerFactory = round_robin) -> None:
        self._rng = rng or random.Random()
        self._factory = factory
        self._balancers: dict[str, Balancer] = {}
        self.serving = self._build(snapshot)

    def install(self, snapshot: Snapshot) -> Serving:
        self.serving = serving = self._build(snapshot)
        return serving

    def _build(self, snapshot: Snapshot) -> Serving:
        backends = dict(snapshot.backends)
        if snapshot.default_backend is not None:
            backends.setdefault(snapshot.default_backend.key, snapshot.default_backend)
        for route in snapshot.routes:
            backends.setdefault(route.backend.key, route.backend)
        balancers: dict[str, Balancer] = {}
        for key, backend in backends.items():
            balancer = self._balancers.get(key)
            if balancer is None:
                balancer = self._factory(backend, self._rng)
            else:
                balancer.update(backend.endpoints)
            balancers[key] = balancer
        self._balancers = balancers
        settings = snapshot.settings
        return Serving(
            snapshot=snapshot,
            table=RouteTable(snapshot.routes),
            balancers=MappingProxyType(balancers),
            settings=settings,
            header_roles=_header_roles(settings),
            trusted=tuple(ipaddress.ip_network(c, strict=False) for c in settings.trusted_proxies)
            if settings.use_forwarded_headers else (),
            trust_all=settings.use_forwarded_headers and not settings.trusted_proxies,
        )


def _header_roles(settings: ProxySettings) -> dict[bytes, int]:
    roles = dict(http1.REQUEST_HEADER_ROLE)
    custom = settings.forwarded_for_header.lower().encode("latin-1")
    if custom != b"x-forwarded-for":
        # the client address then comes from the configured header; we still send X-Forwarded-For upstream
        roles[custom] = http1.FORWARDED_FOR
        roles[b"x-forwarded-for"] = http1.DROP
    return roles

