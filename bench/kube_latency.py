"""Cluster mode: how long a change takes from the API server to the data plane, with production settings.

    PYTHONPATH=src:tests/integration python bench/kube_latency.py [--services 200] [--changes 40]

Starts the test API server (tests/integration/fake_apiserver.py) with N Services, each with an Ingress and
an EndpointSlice, and a `KubernetesSource` with its default debounce (100 ms) feeding a `Dataplane`. Then,
one at a time, it writes a change (alternately an EndpointSlice update, which takes the fast path, and an
Ingress update, which takes a full compile) and measures the time from the write to the install of the
Snapshot that has it. Prints min / median / max per kind of change. The budget is 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile

from fake_apiserver import FakeApiServer

from pyngress.config import CompileOptions
from pyngress.model import Snapshot
from pyngress.runtime.state import Dataplane
from pyngress.sources.kubernetes import KubernetesSource, connect


def objects(i: int, port: int) -> list[dict[str, object]]:
    name = f"svc{i}"
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
         "ports": [{"name": "http", "port": port}], "endpoints": [{"addresses": ["10.0.0.1"]}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": name, "namespace": "default"},
         "spec": {"ingressClassName": "pyngress", "rules": [{"host": f"{name}.example.com", "http": {"paths": [
             {"path": "/", "pathType": "Prefix",
              "backend": {"service": {"name": name, "port": {"name": "http"}}}}]}}]}},
    ]


async def main(services: int, changes: int) -> None:
    api = await FakeApiServer().start()
    for i in range(services):
        for obj in objects(i, 8080):
            api.put_object(obj)
    installed: list[tuple[float, Snapshot]] = []
    dataplane = Dataplane(Snapshot(version=0))
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def apply(snapshot: Snapshot) -> None:
        dataplane.install(snapshot)
        installed.append((loop.time(), snapshot))
        wake.set()

    with tempfile.TemporaryDirectory() as tmp:
        client = await connect(api.kubeconfig(f"{tmp}/kubeconfig"))
        source = KubernetesSource(client, CompileOptions(), apply)
        task = asyncio.create_task(source.run())
        await asyncio.wait_for(source.synced.wait(), 30)
        times: dict[str, list[float]] = {"EndpointSlice (fast path)": [], "Ingress (full compile)": []}
        for n in range(changes):
            i, fast = n % services, n % 2 == 0
            wake.clear()
            before = len(installed)
            start = loop.time()
            if fast:
                api.put_object(objects(i, 9000 + n)[1])
            else:
                ingress = objects(i, 0)[2]
                ingress["spec"]["rules"][0]["host"] = f"svc{i}-v{n}.example.com"  # type: ignore[index]
                api.put_object(ingress)
            while len(installed) == before:
                await asyncio.wait_for(wake.wait(), 10)
                wake.clear()
            times["EndpointSlice (fast path)" if fast else "Ingress (full compile)"].append(
                installed[-1][0] - start)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    await api.close()
    print(f"{services} services ({services} routes), default debounce {source.debounce * 1000:.0f} ms")
    for kind, values in times.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{kind:28} n={len(ms):3}  min {ms[0]:7.1f} ms  median {statistics.median(ms):7.1f} ms  "
              f"max {ms[-1]:7.1f} ms")
    print(f"rebuilds: {source.counters}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--changes", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.services, args.changes))
