"""What to write into `status.loadBalancer.ingress` of the Ingresses we serve, and whether a write is needed.

The address comes, as in ingress-nginx, from one of:
- `--publish-status-address a,b`: fixed addresses (an IP becomes `{ip}`, anything else `{hostname}`);
- `--publish-service ns/name`: the `status.loadBalancer.ingress` of that Service (our own Service of type
  LoadBalancer: the cloud's load balancer address); while the cloud has not assigned one, nothing is written.
Entries are compared as sets of (ip, hostname), sorted the same way on both sides, so a write that would
change nothing (the common case on every resync and on every restart) is skipped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

LoadBalancerIngress = dict[str, str]


def static_status(addresses: Sequence[str]) -> list[LoadBalancerIngress]:
    out: list[LoadBalancerIngress] = []
    for a in addresses:
        try:
            ipaddress.ip_address(a)
        except ValueError:
            out.append({"hostname": a})
        else:
            out.append({"ip": a})
    return normalized(out)


def service_status(status: Any) -> list[LoadBalancerIngress]:
    """The LoadBalancer ingress of a Service's raw `status`, keeping only ip and hostname."""
    entries = ((status or {}).get("loadBalancer") or {}).get("ingress") or []
    return normalized([{k: str(e[k]) for k in ("ip", "hostname") if e.get(k)} for e in entries
                       if isinstance(e, dict)])


def normalized(entries: Sequence[LoadBalancerIngress]) -> list[LoadBalancerIngress]:
    unique = {(e.get("ip", ""), e.get("hostname", "")): e for e in entries if e}
    return [unique[k] for k in sorted(unique)]


def needs_write(current_status: Any, desired: Sequence[LoadBalancerIngress]) -> bool:
    """Whether an Ingress's raw `status` differs from `desired` (ports and errors on entries ignored)."""
    return service_status(current_status) != list(desired)
