"""Layer 4 services: a listen port (TCP or UDP) relayed to a Service's endpoints, as compiled into the Snapshot.

A `StreamService` comes either from an entry of the tcp/udp services ConfigMaps (ingress-nginx's format,
`"9000": "shop/db:5432::PROXY"`) or from one port of a Service of `type: LoadBalancer` (with
`--serve-load-balancer-services`). Like a Route it is pure data; the runtime (`runtime/l4`) keeps one listener
per `listen_key` and the live state (balancer cursors, in-flight connection counts) by `balancer_key`, so a
reload that only changes endpoints keeps the listening socket and every open connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyngress.model.snapshot import DEFAULT_BALANCE, NO_AFFINITY, AffinitySpec, Backend, BalanceSpec

TCP = "TCP"
UDP = "UDP"
PROTOCOLS = (TCP, UDP)


@dataclass(frozen=True, slots=True)
class StreamService:
    protocol: str  # TCP or UDP
    port: int  # the port pyngress listens on (a LoadBalancer Service's port plus --lb-port-offset)
    backend: Backend
    origin: str  # where it was declared, for check and logs: "ConfigMap ns/tcp-services data[9000]"
    service: str = ""  # "namespace/name" of the Service behind it
    load_balancer: bool = False  # declared by a Service of type LoadBalancer (Kubernetes writes its status)
    service_port: int = 0  # LoadBalancer: the Service's own port number (its status reports this one)
    balance: BalanceSpec = DEFAULT_BALANCE
    affinity: AffinitySpec = NO_AFFINITY
    accept_proxy: bool = False  # the client (a load balancer in front) starts with a PROXY v1/v2 header
    send_proxy: int = 0  # 0: none; 1 or 2: send a PROXY header of that version to the pod first
    external_traffic_policy: str = "Cluster"  # LoadBalancer Services: Cluster or Local
    listen_key: str = field(init=False, repr=False, compare=False)  # "tcp/9000": one listener per key
    balancer_key: str = field(init=False, repr=False, compare=False)  # live balancer: backend + how

    def __post_init__(self) -> None:
        object.__setattr__(self, "listen_key", f"{self.protocol.lower()}/{self.port}")
        key = f"{self.listen_key}>{self.backend.key}#{self.balance.label}"
        if self.affinity.kind:
            key += f"#{self.affinity.label}#{self.affinity.table_size}"
        object.__setattr__(self, "balancer_key", key)

    @property
    def proxy_label(self) -> str:
        """How `pyngress check` shows the PROXY protocol settings: "in", "out v1", "in, out v2" or ""."""
        parts = (["in"] if self.accept_proxy else []) + ([f"out v{self.send_proxy}"] if self.send_proxy else [])
        return ", ".join(parts)
