"""The compiled configuration: what the data plane serves.

A Snapshot is immutable and self-contained. The control plane builds one from Kubernetes objects
(`config.compile`), the runtime swaps it in with one reference assignment and reads it once per request.
Live state (round-robin cursors, pooled connections, later health) is never stored here: it is keyed by
`Backend.key` and `Endpoint.key`, which stay the same across snapshots, so it survives reloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from pyngress.model.flow import DEFAULT_BODY_SIZE, FlowSpec
from pyngress.model.health import DEFAULT_RETRY, NO_HEALTH, HealthSpec, RetryPolicy
from pyngress.model.objects import PathType
from pyngress.model.settings import ProxySettings
from pyngress.model.tls import NO_TLS, HttpsPolicy, TLSConfig, UpstreamTLS

if TYPE_CHECKING:  # issue 9 (L4): model.streams builds on this module's Backend and specs
    from pyngress.model.streams import StreamService


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one object. Reported (check, log), never fatal for the other objects."""

    kind: str
    namespace: str
    name: str
    field: str
    message: str
    source: str = ""  # file path, when the object came from a file
    severity: str = "error"  # "error": the object (or part) is not served; "warning": served, but look

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        obj = f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"
        at = f": {self.field}" if self.field else ""
        return f"{where}{obj}{at}: {self.message}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    weight: int = 1
    name: str = ""  # the EndpointSlice targetRef name (a Pod), when known
    # issue 7: serving && terminating (KEP-1669). Such an endpoint gets new requests only when its backend has
    # no ready one; session affinity keeps the users it already has until it is gone.
    terminating: bool = False
    # Identity across snapshots: live state (health, counters, pools) keys on it. Computed once: the hot path
    # reads it on every request.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = f"[{self.address}]" if ":" in self.address else self.address
        object.__setattr__(self, "key", f"{host}:{self.port}")


@dataclass(frozen=True, slots=True)
class Backend:
    """A Service port as a pool of endpoints. `key` is "namespace/service:port" (port by name or number)."""

    key: str
    namespace: str
    service: str
    port: str
    endpoints: tuple[Endpoint, ...] = ()
    problem: str = ""  # why it has no endpoints, when that is a configuration problem (shown by check)
    health: HealthSpec = NO_HEALTH  # issue 7: active check and slow start (Service or Ingress annotations)


ALGORITHMS = ("round_robin", "random", "least_conn", "p2c", "ewma")
HASH_ALGORITHMS = ("ring", "maglev")


@dataclass(frozen=True, slots=True)
class BalanceSpec:
    """How a route spreads its requests (annotations load-balance, upstream-hash-by...; see config)."""

    algorithm: str = "round_robin"  # one of ALGORITHMS; ignored when hash_by is set
    hash_by: str = ""  # upstream-hash-by template ("$remote_addr", "$http_x_user"...); "" = no hashing
    hash_algorithm: str = "ring"  # one of HASH_ALGORITHMS
    subset_size: int = 0  # upstream-hash-by-subset: hash to a subset of this size, then pick at random in it

    @property
    def label(self) -> str:
        """How `pyngress check` shows it."""
        if not self.hash_by:
            return self.algorithm
        subset = f", subsets of {self.subset_size}" if self.subset_size else ""
        return f"hash {self.hash_by} ({self.hash_algorithm}{subset})"


DEFAULT_BALANCE = BalanceSpec()


@dataclass(frozen=True, slots=True)
class AffinitySpec:
    """Session affinity of a route (annotations affinity, session-cookie-*; a Service's sessionAffinity)."""

    kind: str = ""  # "" (none), "cookie" or "client-ip"
    mode: str = "persistent"  # cookie: "persistent" (the cookie names the endpoint) or "balanced"
    cookie_name: str = "INGRESSCOOKIE"
    cookie_path: str = ""  # "" means the route's path
    cookie_domain: str = ""
    samesite: str = ""  # "", "None", "Lax" or "Strict"
    conditional_samesite_none: bool = False  # leave SameSite=None out for clients known to mishandle it
    expires: int = 0  # seconds from now; 0: no Expires
    max_age: int = 0  # 0: no Max-Age
    secure: bool = False
    change_on_failure: bool = False  # a retried request gets a cookie for the endpoint that answered
    salt: str = ""  # keys the persistent token; replicas that must agree share it (ConfigMap)
    timeout: float = 10800.0  # client-ip: seconds idle before the address is balanced again
    table_size: int = 65536  # client-ip: addresses remembered per route (LRU)

    @property
    def label(self) -> str:
        if self.kind == "cookie":
            return f"cookie {self.cookie_name} ({self.mode})"
        if self.kind == "client-ip":
            return f"client-ip {self.timeout:g}s"
        return ""


NO_AFFINITY = AffinitySpec()


@dataclass(frozen=True, slots=True)
class Route:
    host: str  # lower case; "" matches every host; "*.foo.com" matches exactly one label
    path: str
    path_type: PathType
    backend: Backend
    ingress: str  # "namespace/name" of the Ingress the rule came from
    balance: BalanceSpec = DEFAULT_BALANCE
    affinity: AffinitySpec = NO_AFFINITY
    access_log: bool = True  # the Ingress's enable-access-log annotation (issue 8)
    # TLS (issue 4, config.tls): redirect to HTTPS / HSTS, and re-encryption to the pods; None when unused
    https: HttpsPolicy | None = None
    upstream_tls: UpstreamTLS | None = None
    backend_protocol: str = "HTTP"  # issue 4: backend-protocol (HTTP, HTTPS, GRPC, GRPCS)
    retry: RetryPolicy = DEFAULT_RETRY  # issue 7: proxy-next-upstream*
    # Which live balancer serves this route: one per backend and way of balancing, so two Ingresses that
    # balance one Service differently do not share a cursor. Plain round robin keeps the backend key.
    balancer_key: str = field(init=False, repr=False, compare=False)
    # flow and access control (issue 5): None when the route has no limit and no access list
    flow: FlowSpec | None = None
    max_body: int = DEFAULT_BODY_SIZE  # proxy-body-size in bytes; 0: unlimited

    def __post_init__(self) -> None:
        key = self.backend.key
        if self.balance != DEFAULT_BALANCE:
            key += f"#{self.balance.label}"
        if self.affinity != NO_AFFINITY:
            key += f"#{self.affinity.label}#{hash(self.affinity):x}"  # cookie settings differ: own table
        object.__setattr__(self, "balancer_key", key)


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    routes: tuple[Route, ...] = ()
    default_backend: Backend | None = None  # used when no rule matches; absent means 404
    default_balance: BalanceSpec = DEFAULT_BALANCE  # how the default backend is balanced
    default_affinity: AffinitySpec = NO_AFFINITY
    backends: Mapping[str, Backend] = field(default_factory=lambda: MappingProxyType({}))
    settings: ProxySettings = field(default_factory=ProxySettings)
    problems: tuple[Problem, ...] = ()
    streams: tuple[StreamService, ...] = ()  # issue 9 (L4): TCP/UDP listeners, sorted by protocol and port
    tls: TLSConfig = NO_TLS  # certificates and SNI names for the HTTPS listener (issue 4)
    # flow and access control of the default backend's route (issue 5)
    default_flow: FlowSpec | None = None
    default_max_body: int = DEFAULT_BODY_SIZE
