"""The EndpointSlice fast path gives exactly what a full compile of the same objects gives, or declines."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from pyngress.config import CompileOptions, compile_snapshot, load_paths
from pyngress.config.endpoint_update import refresh_endpoints
from pyngress.model import EndpointSlice, Ingress, KubeObject, Pod, Service, SliceEndpoint, Snapshot

EXAMPLES = Path(__file__).parents[2] / "examples"
OPTIONS = CompileOptions()


def _objects() -> list[KubeObject]:
    objects, problems = load_paths([EXAMPLES])
    assert not [p for p in problems if p.severity == "error"]
    return objects


def _fast(old: Snapshot, objects: list[KubeObject], changed: set[tuple[str, str]]) -> Snapshot | None:
    services = {(o.meta.namespace, o.meta.name): o for o in objects if isinstance(o, Service)}
    slices: defaultdict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
    for o in objects:
        if isinstance(o, EndpointSlice):
            slices[(o.meta.namespace, o.service_name)].append(o)
    pods = {(o.meta.namespace, o.meta.name): o for o in objects if isinstance(o, Pod)}
    return refresh_endpoints(old, changed, services, slices, pods, version=old.version + 1)


def _with_slices(objects: list[KubeObject], edit: dict[str, EndpointSlice | None]) -> list[KubeObject]:
    out: list[KubeObject] = [o for o in objects if not (isinstance(o, EndpointSlice) and o.meta.name in edit)]
    return out + [s for s in edit.values() if s is not None]


def _slice(objects: list[KubeObject], name: str) -> EndpointSlice:
    return next(o for o in objects if isinstance(o, EndpointSlice) and o.meta.name == name)


def test_fast_path_equals_full_compile_for_slice_changes() -> None:
    objects = _objects()
    old = compile_snapshot(objects, OPTIONS, version=1)
    first = next(o for o in objects if isinstance(o, EndpointSlice))
    key = (first.meta.namespace, first.service_name)
    grown = dataclasses.replace(first, endpoints=(*first.endpoints, SliceEndpoint(("127.0.0.9",))))
    not_ready = dataclasses.replace(first, endpoints=tuple(dataclasses.replace(e, ready=False)
                                                           for e in first.endpoints))
    for edit in ({first.meta.name: grown}, {first.meta.name: not_ready}, {first.meta.name: None}):
        changed = _with_slices(objects, edit)
        fast = _fast(old, changed, {key})
        full = compile_snapshot(changed, OPTIONS, version=2)
        assert fast is not None and fast == full
        assert fast != dataclasses.replace(old, version=2)  # the change is visible
    assert _slice(objects, first.meta.name) is first


def test_unchanged_endpoints_give_the_same_snapshot() -> None:
    objects = _objects()
    old = compile_snapshot(objects, OPTIONS, version=1)
    fast = _fast(old, objects, {("default", "no-such-service")})
    assert fast == dataclasses.replace(old, version=2)


def test_weighted_service_declines_the_shortcut() -> None:
    objects = _objects()
    first = next(o for o in objects if isinstance(o, EndpointSlice))
    cpu = {"pyngress.io/weight-by": "cpu"}
    weighted = [dataclasses.replace(o, meta=dataclasses.replace(o.meta, annotations=cpu))
                if isinstance(o, Service) and o.meta.name == first.service_name
                and o.meta.namespace == first.meta.namespace else o for o in objects]
    old = compile_snapshot(weighted, OPTIONS, version=1)
    assert _fast(old, weighted, {(first.meta.namespace, first.service_name)}) is None


def test_missing_service_declines_when_the_backend_problem_changes() -> None:
    objects = _objects()
    first = next(o for o in objects if isinstance(o, EndpointSlice))
    old = compile_snapshot(objects, OPTIONS, version=1)
    gone = [o for o in objects if not (isinstance(o, Service) and o.meta.name == first.service_name)]
    assert _fast(old, gone, {(first.meta.namespace, first.service_name)}) is None


def test_fast_path_keeps_the_health_check_an_ingress_asked_for() -> None:
    # issue 7: a check asked for by an Ingress is not on the Service: the shortcut must keep it
    objects = _objects()
    svc = next(o for o in objects if isinstance(o, Service) and o.meta.name == "catalog")
    ing = next(o for o in objects if isinstance(o, Ingress) and o.meta.name == "catalog")
    moved_notes = [dataclasses.replace(svc, meta=dataclasses.replace(svc.meta, annotations={})),
                   dataclasses.replace(ing, meta=dataclasses.replace(ing.meta, annotations=svc.meta.annotations))]
    objects = [o for o in objects if o not in (svc, ing)] + moved_notes
    old = compile_snapshot(objects, OPTIONS, version=1)
    assert old.backends["health-example/catalog:http"].health.active is not None  # from the Ingress
    catalog = _slice(objects, "catalog-1")
    grown = dataclasses.replace(catalog, endpoints=(*catalog.endpoints, SliceEndpoint(("127.0.0.9",))))
    changed = _with_slices(objects, {catalog.meta.name: grown})
    fast = _fast(old, changed, {("health-example", "catalog")})
    assert fast is not None and fast == compile_snapshot(changed, OPTIONS, version=2)
    assert fast.backends["health-example/catalog:http"].health.active is not None
