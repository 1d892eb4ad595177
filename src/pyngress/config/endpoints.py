"""A Service backend reference -> `Backend` with its endpoints, as kube-proxy would resolve it.

Resolution, for an Ingress in namespace N naming service S and port P (by name or number):
1. the Service N/S. Missing: the Backend has no endpoints and `problem` says why; the route stays, so the
   runtime answers 503 (the Service may simply not exist *yet*, and a 404 would hide the mistake).
   `type: ExternalName` is not supported yet: same treatment.
2. the ServicePort: by `name` when the Ingress gives port.name, else by `port` number. Missing: as in 1.
3. the EndpointSlices labelled `kubernetes.io/service-name: S` in N. In each slice, the port whose name equals
   the ServicePort's name (both "" for an unnamed port) gives the endpoint port. A slice with no ports at all
   (hand-written file-mode slices often omit them) falls back to the ServicePort's numeric targetPort, or its
   port when targetPort is absent; a named targetPort cannot be resolved without Pods, so such a slice is skipped.
4. endpoints whose `conditions.ready` is true serve. Those with `serving && terminating` are kept too,
   marked `terminating`: the runtime sends them new requests only when the backend has no ready endpoint
   (kube-proxy's rule since ProxyTerminatingEndpoints, KEP-1669: a rollout of the last pods, or a scale to
   zero, drains instead of failing; `health.selection` applies it, so health checks and panic mode see the
   same set), and session affinity keeps their existing users (issue 7). The others are skipped. Every
   address is one `Endpoint(address, port, weight=1, name=<targetRef name>)`; the same address:port in two
   slices counts once, ready winning over terminating (slices of one Service may overlap while the
   EndpointSlice controller moves endpoints between them).
6. health: the Service's health-check and slow-start annotations (`config.health_notes`), issue 7.
5. weights: the Service's `pyngress.io/endpoint-weights` and `pyngress.io/weight-by` annotations, read with
   the Pods of its namespace (`weights`); their Problems are on the Service.

Endpoints are sorted by key so that equal inputs give equal Backends, whatever the slice order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pyngress.config.health_notes import health_spec
from pyngress.config.weights import PodIndex, weigh_endpoints
from pyngress.model import (
    NO_HEALTH,
    Backend,
    Endpoint,
    EndpointSlice,
    Problem,
    Service,
    ServiceBackendRef,
    ServicePort,
)

EXTERNAL_NAME_UNSUPPORTED = "ExternalName services are not supported yet"


def backend_key(namespace: str, ref: ServiceBackendRef) -> str:
    return f"{namespace}/{ref.name}:{ref.port_text}"


def resolve_backend(
    namespace: str,
    ref: ServiceBackendRef,
    services: Mapping[tuple[str, str], Service],
    slices: Mapping[tuple[str, str], list[EndpointSlice]],
    pods: PodIndex | None = None,
) -> tuple[Backend, str, list[Problem]]:
    """The Backend for `ref` used from an Ingress in `namespace`, the field of `ref` at fault ("name" or
    "port") when it cannot work (then `Backend.problem` says why), and the Problems of the Service's weights."""
    key = backend_key(namespace, ref)

    def broken(problem: str, field: str = "name") -> tuple[Backend, str, list[Problem]]:
        return Backend(key, namespace, ref.name, ref.port_text, (), problem), field, []

    service = services.get((namespace, ref.name))
    if service is None:
        return broken(f"Service {namespace}/{ref.name} not found")
    if service.type == "ExternalName":
        return broken(EXTERNAL_NAME_UNSUPPORTED)
    port = find_service_port(service, ref)
    if port is None:
        wanted = f"named {ref.port_name!r}" if ref.port_name is not None else str(ref.port_number)
        return broken(f"Service {namespace}/{ref.name} has no port {wanted}", "port")
    ready = ready_endpoints(port, slices.get((namespace, ref.name), ()))
    endpoints, problems = weigh_endpoints(service, ready, pods or {})
    health, health_problems = health_spec(service)
    return (Backend(key, namespace, ref.name, ref.port_text, endpoints, health=health or NO_HEALTH), "",
            problems + health_problems)


def find_service_port(service: Service, ref: ServiceBackendRef) -> ServicePort | None:
    for port in service.ports:
        if ref.port_name is not None and port.name == ref.port_name:
            return port
        if ref.port_name is None and port.port == ref.port_number:
            return port
    return None


def ready_endpoints(port: ServicePort, slices: Iterable[EndpointSlice]) -> tuple[Endpoint, ...]:
    """The ready endpoints, and the serving && terminating ones marked `terminating` (see 4. above)."""
    found: dict[str, Endpoint] = {}
    for slice_ in sorted(slices, key=lambda s: s.meta.name):
        number = _slice_port(port, slice_)
        if number is None:
            continue
        for ep in slice_.endpoints:
            terminating = not ep.ready
            if terminating and not (ep.serving and ep.terminating):
                continue
            for address in ep.addresses:
                endpoint = Endpoint(address, number, 1, ep.target_ref_name, terminating)
                seen = found.get(endpoint.key)
                if seen is None or (seen.terminating and not terminating):
                    found[endpoint.key] = endpoint
    return tuple(sorted(found.values(), key=lambda e: e.key))


def _slice_port(port: ServicePort, slice_: EndpointSlice) -> int | None:
    for candidate in slice_.ports:
        if candidate.name == port.name:
            return candidate.port
    if slice_.ports:
        return None
    if port.target_port is None:
        return port.port
    return port.target_port if isinstance(port.target_port, int) else None
