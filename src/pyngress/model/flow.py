"""Flow and access control of a route (issue 5): the compiled, immutable form of the limit and access
annotations and ConfigMap keys. Plain data; `policy.flow` turns it into matchers and live tables.

A route without any of these has `Route.flow = None`, so the hot path pays one attribute test. Live state
(buckets, counts) is keyed by `FlowSpec.key`: the owning Ingress plus the values, so it survives reloads that
do not change the limits and two Ingresses with the same values do not share buckets (as ingress-nginx names
its limit zones after the Ingress).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_BODY_SIZE = 1024 * 1024  # proxy-body-size: 1m, nginx's client_max_body_size default


@dataclass(frozen=True, slots=True)
class RateSpec:
    """One token bucket per client: `rate` tokens per second, `burst` tokens at most."""

    rate: float
    burst: int
    label: str  # "10 r/s", "100 r/m": for check and the docs


@dataclass(frozen=True, slots=True)
class GlobalLimitSpec:
    """global-rate-limit*: `limit` requests per `window` seconds per key, counted in Redis across replicas."""

    limit: int
    window: float
    key: str = "$remote_addr"  # an upstream-hash-by style template
    ignored: tuple[str, ...] = ()  # global-rate-limit-ignored-cidrs
    batch: int = 0  # requests granted locally per Redis round trip; 0: chosen from the limit (see runtime)


@dataclass(frozen=True, slots=True)
class FlowSpec:
    owner: str  # the Ingress ("namespace/name"); "" for ConfigMap-only policy
    rates: tuple[RateSpec, ...] = ()  # limit-rps and/or limit-rpm: both apply when both are set
    connections: int = 0  # limit-connections; 0: none
    exempt: tuple[str, ...] = ()  # limit-whitelist / limit-allowlist: CIDRs no limit applies to
    allow: tuple[str, ...] = ()  # allowlist-source-range (annotation, else the ConfigMap's): others get 403
    deny: tuple[str, ...] = ()  # denylist-source-range: these get 403
    block_cidrs: tuple[str, ...] = ()  # ConfigMap block-cidrs: 403
    block_user_agents: tuple[str, ...] = ()  # ConfigMap block-user-agents: exact, or ~regex / ~*regex
    block_referers: tuple[str, ...] = ()  # ConfigMap block-referers: likewise
    req_status: int = 429  # limit-req-status-code
    conn_status: int = 429  # limit-conn-status-code
    global_limit: GlobalLimitSpec | None = None
    global_status: int = 429  # global-rate-limit-status-code
    proxy_protocol: int = 0  # proxy-protocol (ours): 1 or 2, the PROXY header sent to ssl-passthrough pods
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limits = (self.rates, self.connections, self.exempt, self.global_limit)
        object.__setattr__(self, "key", f"{self.owner}#{hash(limits):x}")

    @property
    def label(self) -> str:
        """How `pyngress check` shows it."""
        parts = [r.label + f" burst {r.burst}" for r in self.rates]
        if self.connections:
            parts.append(f"{self.connections} conn")
        if self.global_limit is not None:
            g = self.global_limit
            parts.append(f"global {g.limit}/{g.window:g}s by {g.key}")
        if self.allow:
            parts.append("allowlist")
        if self.deny or self.block_cidrs or self.block_user_agents or self.block_referers:
            parts.append("denylist")
        if self.proxy_protocol:
            parts.append(f"passthrough PROXY v{self.proxy_protocol}")
        return ", ".join(parts)
