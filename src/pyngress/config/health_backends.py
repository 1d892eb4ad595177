"""Which HealthSpec each backend gets when Ingresses ask for one (issue 7).

A Service's own annotations win (they describe its pods). Otherwise the oldest served Ingress that sets health
annotations and routes to the backend gives it its spec; a younger Ingress asking for a different one for the
same backend gets a warning naming the winner. An Ingress's health annotations apply to every backend it
routes to (its rules and its default backend).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from pyngress.config.endpoints import backend_key
from pyngress.config.health_notes import health_spec
from pyngress.model import NO_HEALTH, Backend, HealthSpec, Ingress, Problem


def ingress_health(ingresses_oldest_first: Iterable[Ingress]) -> tuple[dict[str, HealthSpec], list[Problem]]:
    chosen: dict[str, tuple[HealthSpec, str]] = {}
    problems: list[Problem] = []
    for ingress in ingresses_oldest_first:
        spec, found = health_spec(ingress)
        problems += found
        if spec is None:
            continue
        for key in _backend_keys(ingress):
            if key not in chosen:
                chosen[key] = (spec, ingress.meta.key)
            elif chosen[key][0] != spec:
                meta = ingress.meta
                problems.append(Problem(
                    "Ingress", meta.namespace, meta.name, "metadata.annotations",
                    f"health-check annotations for {key} ignored: the older Ingress {chosen[key][1]} sets "
                    "other ones", meta.source, "warning"))
    return {key: spec for key, (spec, _) in chosen.items()}, problems


def with_ingress_health(resolved: tuple[Backend, str, list[Problem]], asked: Mapping[str, HealthSpec]
                        ) -> tuple[Backend, str, list[Problem]]:
    backend, field, problems = resolved
    spec = asked.get(backend.key)
    if spec is None or backend.health != NO_HEALTH:
        return resolved
    return replace(backend, health=spec), field, problems


def _backend_keys(ingress: Ingress) -> list[str]:
    refs = [p.backend for rule in ingress.rules for p in rule.paths]
    if ingress.default_backend is not None:
        refs.append(ingress.default_backend)
    return [backend_key(ingress.meta.namespace, ref.service) for ref in refs if ref.service is not None]
