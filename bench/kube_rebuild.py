"""Cluster mode: what one rebuild costs on a big cluster, full compile vs the EndpointSlice fast path.

    PYTHONPATH=src python bench/kube_rebuild.py [--services 1000] [--rounds 5]

Builds N Services, each with one Ingress (one host, two paths) and two EndpointSlices of 5 endpoints, then
times (best of `rounds`): a full `compile_snapshot` over every object, and `refresh_endpoints` for one
Service whose slice changed (what a Pod becoming ready costs), then what installing the result costs the data
plane on the event loop: `Dataplane.install` of an endpoint-only change (`runtime.endpoint_swap`: the route
table kept, one balancer updated) against a full rebuild of table and balancers (any other change, and
what every install cost before).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from collections import defaultdict

from pyngress.config import CompileOptions, compile_snapshot
from pyngress.config.endpoint_update import refresh_endpoints
from pyngress.model import (
    EndpointPort,
    EndpointSlice,
    HTTPIngressPath,
    Ingress,
    IngressBackend,
    IngressRule,
    KubeObject,
    Meta,
    PathType,
    Service,
    ServiceBackendRef,
    ServicePort,
    SliceEndpoint,
)
from pyngress.runtime.state import Dataplane


def cluster(n: int) -> list[KubeObject]:
    objects: list[KubeObject] = []
    for i in range(n):
        ns, name = f"ns{i % 20}", f"svc{i}"
        objects.append(Service(Meta(name, ns), ports=(ServicePort(80, "http"),)))
        for s in range(2):
            eps = tuple(SliceEndpoint((f"10.{i // 250}.{i % 250}.{s * 5 + e}",), target_ref_name=f"{name}-{s}-{e}")
                        for e in range(5))
            objects.append(EndpointSlice(Meta(f"{name}-{s}", ns, labels={"kubernetes.io/service-name": name}),
                                         name, endpoints=eps, ports=(EndpointPort(8080, "http"),)))
        backend = IngressBackend(ServiceBackendRef(name, port_name="http"))
        paths = (HTTPIngressPath("/", PathType.PREFIX, backend), HTTPIngressPath("/api", PathType.PREFIX, backend))
        objects.append(Ingress(Meta(name, ns, creation_timestamp=f"2024-01-01T00:00:{i % 60:02}Z"), "pyngress",
                               rules=(IngressRule(f"{name}.example.com", paths),)))
    return objects


def best(fn: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    objects = cluster(args.services)
    options = CompileOptions()
    snapshot = compile_snapshot(objects, options)
    target = next(o for o in objects if isinstance(o, EndpointSlice))
    changed = dataclasses.replace(target, endpoints=target.endpoints[1:])
    after = [changed if o is target else o for o in objects]
    services = {(o.meta.namespace, o.meta.name): o for o in after if isinstance(o, Service)}
    slices: defaultdict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
    for o in after:
        if isinstance(o, EndpointSlice):
            slices[(o.meta.namespace, o.service_name)].append(o)
    key = {(target.meta.namespace, target.service_name)}
    fast = refresh_endpoints(snapshot, key, services, slices, {}, version=2)
    assert fast == compile_snapshot(after, options, version=2), "fast path must equal a full compile"
    full_s = best(lambda: compile_snapshot(after, options, version=2), args.rounds)
    fast_s = best(lambda: refresh_endpoints(snapshot, key, services, slices, {}, version=2), args.rounds)
    # installs alternate between the two Snapshots, so each one is a real change (one backend's endpoints)
    pair = itertools.cycle([fast, snapshot])
    dataplane = Dataplane(snapshot)
    table = dataplane.serving.table
    swap_s = best(lambda: dataplane.install(next(pair)), args.rounds * 2)
    assert dataplane.serving.table is table, "an endpoint-only install keeps the route table"
    # what the same install cost before the data-plane fast path: a rebuild of table and balancers
    rebuild_s = best(lambda: dataplane._build(next(pair)), args.rounds * 2)
    print(f"{args.services} services, {len(snapshot.routes)} routes, {len(objects)} objects")
    print(f"full compile:        {full_s * 1000:8.2f} ms")
    print(f"endpoint fast path:  {fast_s * 1000:8.2f} ms  ({full_s / fast_s:.0f}x faster)")
    print(f"install, endpoint-only change (route table kept, one balancer updated): {swap_s * 1000:8.2f} ms")
    print(f"install, full rebuild (route table, every balancer; any other change):  {rebuild_s * 1000:8.2f} ms"
          f"  ({rebuild_s / swap_s:.0f}x)")


if __name__ == "__main__":
    main()
