"""The EndpointSlice fast path: a new Snapshot with fresh endpoints, without rebuilding the routes.

Pods come and go far more often than Ingresses change (every rollout, every scale step), and a slice change
can only change the endpoints of the backends of one Service. `refresh_endpoints` therefore takes the
Snapshot serving now and re-resolves just the backends of the Services whose slices changed, then swaps them
into the routes that use them (and the default backend). Ingress parsing, class selection, conflict
resolution and route ordering are not redone.

It returns None, and the caller does a full compile, whenever the shortcut could differ from one:
- a changed Service has weight annotations (`pyngress.io/endpoint-weights`, `pyngress.io/weight-by`): their
  Problems depend on the endpoints, and the fast path does not rebuild the Problem list;
- a backend resolves with a `problem` different from before (its Service or port changed too).
Everything else the compiler would produce from the same objects comes out the same: that equality is what
the unit tests check, against `compile_snapshot` on the same objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from pyngress.config.endpoints import resolve_backend
from pyngress.config.weights import ENDPOINT_WEIGHTS, WEIGHT_BY
from pyngress.model import Backend, EndpointSlice, Pod, Service, ServiceBackendRef, Snapshot


def refresh_endpoints(
    current: Snapshot,
    changed_services: Iterable[tuple[str, str]],
    services: Mapping[tuple[str, str], Service],
    slices: Mapping[tuple[str, str], list[EndpointSlice]],
    pods: Mapping[tuple[str, str], Pod],
    *,
    version: int,
) -> Snapshot | None:
    """`current` with the backends of `changed_services` (namespace, name) re-resolved; None: compile instead."""
    wanted = set(changed_services)
    fresh: dict[str, Backend] = {}
    for key, backend in current.backends.items():
        if (backend.namespace, backend.service) not in wanted:
            continue
        service = services.get((backend.namespace, backend.service))
        if service is not None and _weighted(service):
            return None
        resolved, _, problems = resolve_backend(backend.namespace, _ref(backend), services, slices, pods)
        if resolved.problem != backend.problem or problems:
            return None
        # issue 7: only slices changed, so the health spec is the one compiled (it may come from an Ingress)
        resolved = dataclasses.replace(resolved, health=backend.health)
        if resolved != backend:
            fresh[key] = resolved
    if not fresh:
        return dataclasses.replace(current, version=version)
    routes = tuple(dataclasses.replace(r, backend=fresh[r.backend.key]) if r.backend.key in fresh else r
                   for r in current.routes)
    default = current.default_backend
    if default is not None and default.key in fresh:
        default = fresh[default.key]
    backends = MappingProxyType({k: fresh.get(k, b) for k, b in current.backends.items()})
    return dataclasses.replace(current, version=version, routes=routes, default_backend=default, backends=backends)


def _weighted(service: Service) -> bool:
    annotations = service.meta.annotations
    return ENDPOINT_WEIGHTS in annotations or WEIGHT_BY in annotations


def _ref(backend: Backend) -> ServiceBackendRef:
    if backend.port.isdigit():
        return ServiceBackendRef(backend.service, port_number=int(backend.port))
    return ServiceBackendRef(backend.service, port_name=backend.port)
