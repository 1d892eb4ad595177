"""Layer 4 services: the tcp/udp services ConfigMaps and Services of type LoadBalancer -> `StreamService`s.

Two sources, both pure data in, Snapshot field out (`compile_streams`):

1. **ConfigMaps** named by `--tcp-services-configmap` / `--udp-services-configmap` ("namespace/name"), in
   ingress-nginx's format: each key is a listen port, each value `namespace/service:port[:PROXY][:PROXY]`.
   `port` is the Service port's number or name. The first `PROXY` means the client sends a PROXY protocol
   header (v1 or v2, detected), the second that we send one to the pod: `PROXY` sends v1 as nginx's
   `proxy_protocol on` does; `PROXYv2` (ours) sends v2, `PROXYv1` is v1 spelled out. An empty third field
   (`shop/db:5432::PROXY`) sends without receiving.
2. **Services of `type: LoadBalancer`** (with `--serve-load-balancer-services`): every port of every such
   Service gets a listener on its `port` plus `--lb-port-offset` (so an unprivileged proxy can serve port 80
   as 8080), TCP or UDP as `protocol` says (SCTP: a warning, not served). Annotations on the Service (ours;
   ingress-nginx serves no LoadBalancer Services): `pyngress.io/accept-proxy-protocol: "true"` and
   `pyngress.io/send-proxy-protocol: v1|v2`. `externalTrafficPolicy: Local` promises the pods the client's
   address; a userspace proxy can only pass it on in a PROXY header, so Local without
   `send-proxy-protocol` gets a warning.

Both: the backend is resolved as an Ingress backend is (`endpoints.resolve_backend`: ready endpoints, weights),
balanced by the Service's `load-balance` annotation (either prefix) or else the ConfigMap's `load-balance`,
with the Service's `sessionAffinity: ClientIP` (and its timeout) as client-IP affinity, as kube-proxy does.
A Service or port that cannot be resolved keeps its listener (connections are closed at once) and is an
error on the entry, as a broken Ingress backend keeps its route and answers 503.

One listener per protocol and port: ConfigMap entries come first (TCP, then UDP, by port), then LoadBalancer
Services oldest first; a later claim on a taken port is a warning and is not served. PROXY protocol on UDP is
not supported (the PROXY codec speaks STREAM only; ingress-nginx ignores it on UDP too): a warning.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pyngress.config.endpoints import resolve_backend
from pyngress.config.settings import parse_bool
from pyngress.config.weights import PodIndex
from pyngress.model import (
    ALGORITHMS,
    DEFAULT_BALANCE,
    NO_AFFINITY,
    TCP,
    UDP,
    AffinitySpec,
    Backend,
    BalanceSpec,
    ConfigMap,
    EndpointSlice,
    Meta,
    Problem,
    ProxySettings,
    Service,
    ServiceBackendRef,
    StreamService,
)

ANNOTATION_PREFIXES = ("pyngress.io/", "nginx.ingress.kubernetes.io/")
ACCEPT_PROXY = "pyngress.io/accept-proxy-protocol"
SEND_PROXY = "pyngress.io/send-proxy-protocol"
_SEND_VERSIONS = {"PROXY": 1, "PROXYv1": 1, "PROXYv2": 2}
_ANNOTATION_VERSIONS = {"v1": 1, "1": 1, "v2": 2, "2": 2, "none": 0, "": 0}


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The command-line flags that turn layer 4 services on (all off by default)."""

    tcp_services_configmap: str = ""  # "namespace/name" (or "name" in any namespace)
    udp_services_configmap: str = ""
    serve_load_balancer_services: bool = False
    lb_port_offset: int = 0  # added to a LoadBalancer Service's port to get the listen port

    @property
    def configmaps(self) -> tuple[str, ...]:
        """The ConfigMaps ("namespace/name" or "name") a source must provide besides the controller's own."""
        return tuple(name for name in (self.tcp_services_configmap, self.udp_services_configmap) if name)


NO_STREAMS = StreamOptions()
_UNRESOLVED = Backend("", "", "", "")  # a StreamService's backend until `_add` resolves it


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One parsed ConfigMap entry: listen port -> namespace/service:port with its PROXY flags."""

    port: int
    namespace: str
    service: str
    service_port: str  # number or name, as written
    accept_proxy: bool = False
    send_proxy: int = 0


def parse_entry(key: str, value: str) -> StreamEntry:
    """ "9000", "shop/db:5432:PROXY:PROXYv2" -> StreamEntry. Raises ValueError with a message for the user."""
    if not (key.isascii() and key.isdigit() and 1 <= int(key) <= 65535):
        raise ValueError(f"the key {key!r} is not a port number (1-65535)")
    parts = value.strip().split(":")
    if len(parts) < 2 or len(parts) > 4:
        raise ValueError(f"{value!r} is not 'namespace/service:port[:PROXY][:PROXY]'")
    namespace, slash, name = parts[0].partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise ValueError(f"{parts[0]!r} is not 'namespace/service'")
    port = parts[1]
    if not port or (port.isdigit() and not 1 <= int(port) <= 65535):
        raise ValueError(f"{port!r} is not a Service port (a number 1-65535 or a name)")
    accept = parts[2] if len(parts) > 2 else ""
    if accept not in ("", "PROXY"):
        raise ValueError(f"{accept!r}: the third field is 'PROXY' (decode PROXY from the client) or empty")
    send = parts[3] if len(parts) > 3 else ""
    if send and send not in _SEND_VERSIONS:
        raise ValueError(f"{send!r}: the fourth field is 'PROXY' (send v1 to the pod), 'PROXYv1' or 'PROXYv2'")
    return StreamEntry(int(key), namespace, name, port, accept == "PROXY", _SEND_VERSIONS.get(send, 0))


def compile_streams(
    find_configmap: Callable[[str], ConfigMap | None],
    services: Mapping[tuple[str, str], Service],
    slices: Mapping[tuple[str, str], list[EndpointSlice]],
    pods: PodIndex,
    options: StreamOptions,
    settings: ProxySettings,
) -> tuple[tuple[StreamService, ...], list[Problem]]:
    """Every stream service the flags ask for, sorted by protocol and port, and the problems found."""
    builder = _StreamBuilder(services, slices, pods, settings)
    for protocol, wanted in ((TCP, options.tcp_services_configmap), (UDP, options.udp_services_configmap)):
        cm = find_configmap(wanted) if wanted else None
        if cm is not None:
            builder.add_configmap(cm, protocol)
    if options.serve_load_balancer_services:
        for svc in sorted(services.values(), key=_age):
            if svc.type == "LoadBalancer":
                builder.add_load_balancer(svc, options.lb_port_offset)
    streams = sorted(builder.streams.values(), key=lambda s: (s.protocol, s.port))
    return tuple(streams), builder.problems


@dataclass(frozen=True, slots=True)
class _At:
    """Where a stream was declared: the object and the field its Problems name."""

    kind: str
    meta: Meta
    field: str

    def problem(self, message: str, severity: str = "error", field: str = "") -> Problem:
        meta = self.meta
        return Problem(self.kind, meta.namespace, meta.name, field or self.field, message, meta.source, severity)


class _StreamBuilder:
    def __init__(self, services: Mapping[tuple[str, str], Service],
                 slices: Mapping[tuple[str, str], list[EndpointSlice]], pods: PodIndex,
                 settings: ProxySettings) -> None:
        self._services, self._slices, self._pods, self._settings = services, slices, pods, settings
        self.streams: dict[str, StreamService] = {}  # by listen_key
        self.problems: list[Problem] = []

    def add_configmap(self, cm: ConfigMap, protocol: str) -> None:
        for key in sorted(cm.data, key=lambda k: (not k.isdigit(), k.zfill(5))):
            at = _At("ConfigMap", cm.meta, f"data.{key}")
            try:
                entry = parse_entry(key, cm.data[key])
            except ValueError as exc:
                self.problems.append(at.problem(f"{exc}: not served"))
                continue
            if protocol == UDP and (entry.accept_proxy or entry.send_proxy):
                self.problems.append(at.problem("PROXY protocol is not supported on UDP: ignored", "warning"))
                entry = StreamEntry(entry.port, entry.namespace, entry.service, entry.service_port)
            by_number = entry.service_port.isdigit()
            ref = ServiceBackendRef(entry.service, None if by_number else entry.service_port,
                                    int(entry.service_port) if by_number else None)
            stream = StreamService(protocol, entry.port, _UNRESOLVED, f"ConfigMap {cm.meta.key} {at.field}",
                                   accept_proxy=entry.accept_proxy, send_proxy=entry.send_proxy)
            self._add(at, stream, entry.namespace, ref)

    def add_load_balancer(self, svc: Service, offset: int) -> None:
        accept, send = self._proxy_annotations(svc)
        if svc.external_traffic_policy == "Local" and not send:
            message = (f"externalTrafficPolicy: Local: the pods see pyngress's address, not the client's, "
                       f"unless {SEND_PROXY} (v1 or v2) passes it on in a PROXY header")
            at = _At("Service", svc.meta, "spec.externalTrafficPolicy")
            self.problems.append(at.problem(message, "warning"))
        for i, port in enumerate(svc.ports):
            at = _At("Service", svc.meta, f"spec.ports[{i}]")
            protocol, listen = port.protocol.upper(), port.port + offset
            if protocol not in (TCP, UDP):
                message = f"{port.protocol} is not supported: not served"
                self.problems.append(at.problem(message, "warning", f"{at.field}.protocol"))
                continue
            if not 1 <= listen <= 65535:
                message = f"{port.port} + --lb-port-offset {offset} is not a port number: not served"
                self.problems.append(at.problem(message, field=f"{at.field}.port"))
                continue
            ref = ServiceBackendRef(svc.meta.name, port.name or None, None if port.name else port.port)
            tcp = protocol == TCP
            stream = StreamService(protocol, listen, _UNRESOLVED, f"Service {svc.meta.key} {at.field}",
                                   load_balancer=True, service_port=port.port, accept_proxy=accept and tcp,
                                   send_proxy=send if tcp else 0,
                                   external_traffic_policy=svc.external_traffic_policy)
            self._add(at, stream, svc.meta.namespace, ref)

    def _add(self, at: _At, stream: StreamService, namespace: str, ref: ServiceBackendRef) -> None:
        """Resolve `stream`'s backend and balancing and keep it, unless its port is taken."""
        taken = self.streams.get(stream.listen_key)
        if taken is not None:
            message = f"{stream.protocol} port {stream.port} is already served by {taken.origin}: not served"
            self.problems.append(at.problem(message, "warning"))
            return
        backend, _, weight_problems = resolve_backend(namespace, ref, self._services, self._slices, self._pods)
        self.problems += weight_problems
        if backend.problem:
            self.problems.append(at.problem(f"{backend.problem}: connections are closed"))
        svc = self._services.get((namespace, ref.name))
        self._check_protocol(at, stream.protocol, svc, ref)
        balance, affinity = self._balancing(svc)
        self.streams[stream.listen_key] = replace(stream, backend=backend, service=f"{namespace}/{ref.name}",
                                                  balance=balance, affinity=affinity)

    def _check_protocol(self, at: _At, protocol: str, svc: Service | None, ref: ServiceBackendRef) -> None:
        for port in svc.ports if svc is not None else ():
            matches = port.name == ref.port_name if ref.port_name is not None else port.port == ref.port_number
            if matches and port.protocol.upper() != protocol:
                message = f"the Service port is {port.protocol}, this listener is {protocol}"
                self.problems.append(at.problem(message, "warning"))

    def _balancing(self, svc: Service | None) -> tuple[BalanceSpec, AffinitySpec]:
        algorithm = self._settings.load_balance
        if svc is not None:
            algorithm = self._service_algorithm(svc, algorithm)
        balance = DEFAULT_BALANCE if algorithm == "round_robin" else BalanceSpec(algorithm=algorithm)
        if svc is None or svc.session_affinity != "ClientIP":
            return balance, NO_AFFINITY
        return balance, AffinitySpec(kind="client-ip", timeout=float(svc.session_affinity_timeout),
                                     table_size=self._settings.affinity_table_size)

    def _service_algorithm(self, svc: Service, default: str) -> str:
        for prefix in ANNOTATION_PREFIXES:
            value = svc.meta.annotations.get(prefix + "load-balance")
            if value is None:
                continue
            if value.strip().lower() in ALGORITHMS:
                return value.strip().lower()
            message = f"{value!r} is not one of {', '.join(ALGORITHMS)}; using {default}"
            self.problems.append(_annotation(svc, prefix + "load-balance").problem(message))
            return default
        return default

    def _proxy_annotations(self, svc: Service) -> tuple[bool, int]:
        annotations, accept, send = svc.meta.annotations, False, 0
        if ACCEPT_PROXY in annotations:
            try:
                accept = parse_bool(annotations[ACCEPT_PROXY])
            except ValueError as exc:
                self.problems.append(_annotation(svc, ACCEPT_PROXY).problem(f"{exc}; not accepting PROXY headers"))
        if SEND_PROXY in annotations:
            value = annotations[SEND_PROXY].strip().lower()
            if value in _ANNOTATION_VERSIONS:
                send = _ANNOTATION_VERSIONS[value]
            else:
                message = f"{value!r} is not v1, v2 or none; not sending PROXY headers"
                self.problems.append(_annotation(svc, SEND_PROXY).problem(message))
        return accept, send


def _annotation(svc: Service, key: str) -> _At:
    return _At("Service", svc.meta, f"metadata.annotations[{key}]")


def load_balancer_ports(streams: Iterable[StreamService]) -> dict[str, tuple[tuple[int, str], ...]]:
    """For the Kubernetes source: each LoadBalancer Service served ("namespace/name") with its (port, protocol)
    pairs, the Service's own port numbers, as `status.loadBalancer.ingress[].ports[]` lists them."""
    found: dict[str, list[tuple[int, str]]] = {}
    for stream in streams:
        if stream.load_balancer:
            found.setdefault(stream.service, []).append((stream.service_port, stream.protocol))
    return {name: tuple(sorted(ports)) for name, ports in sorted(found.items())}


def load_balancer_status(streams: Iterable[StreamService], addresses: Sequence[str],
                         bound: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """For the Kubernetes source: the `status` to write on each LoadBalancer Service served, by "namespace/name":
    `{"loadBalancer": {"ingress": [{"ip": ..., "ports": [{"port": 7777, "protocol": "TCP"}]}]}}`, one ingress
    entry per address of the controller (`hostname` instead of `ip` for a name). Ports are the Service's own.
    `bound` (listen keys that are listening, `StreamRuntime.listeners`) leaves out ports that could not be
    bound; a Service none of whose ports is bound gets an empty `loadBalancer` (no address to advertise)."""
    ports: dict[str, list[dict[str, Any]]] = {}
    for stream in streams:
        if stream.load_balancer:
            served = bound is None or stream.listen_key in bound
            entry = {"port": stream.service_port, "protocol": stream.protocol}
            ports.setdefault(stream.service, []).extend([entry] if served else [])
    return {name: {"loadBalancer": {"ingress": [{_address_field(a): a, "ports": found} for a in addresses]}
                   if found else {}} for name, found in sorted(ports.items())}


def _address_field(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "hostname"
    return "ip"


def _age(svc: Service) -> tuple[str, str, str]:
    return svc.meta.creation_timestamp, svc.meta.namespace, svc.meta.name
