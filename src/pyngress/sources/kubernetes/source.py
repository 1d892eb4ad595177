"""Cluster mode: the API server -> Snapshots, through the same compile-and-swap path as file mode.

Theory of operation. One `Reflector` per kind (Ingress, IngressClass, Service, EndpointSlice, Secret, the
controller's ConfigMap, and Pods only while some Service asks for `pyngress.io/weight-by`) lists and watches
into its `Store`; the tcp/udp services ConfigMaps (`--tcp-services-configmap`, issue 9) get one each too.
A reflector reports every change synchronously to `_changed`, which only records what kind changed and wakes
the rebuild loop: level-triggered, so any number of events collapse into one rebuild.

The loop waits `debounce` seconds after the first change of a burst (a rollout updates dozens of slices in a
few milliseconds), then rebuilds from the stores as they are then:
- only EndpointSlices changed: `refresh_endpoints` re-resolves just the backends of those Services on the
  Snapshot serving now, without rebuilding routes (it declines when a full compile could differ);
- anything else: `compile_snapshot` over every cached object, in a worker thread (it may take a while on a
  big cluster and must not stall the proxy's event loop), exactly as file mode does.
A result equal to the Snapshot serving (ignoring `version`) is not swapped. Worst case, a change reaches the
routing table `debounce` + compile time after the API server sent it, well under a second.

`synced` is set once every kind has been listed in full and the first Snapshot built from those lists is
applied: that is what `/readyz` must wait for (serving before it would answer 404 for hosts that exist).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyngress.config import CompileOptions, compile_snapshot
from pyngress.config.endpoint_update import refresh_endpoints
from pyngress.config.weights import WEIGHT_BY
from pyngress.model import EndpointSlice, Pod, Service, Snapshot
from pyngress.observability import events as metrics
from pyngress.sources.kubernetes import resources as r
from pyngress.sources.kubernetes.client import KubeClient
from pyngress.sources.kubernetes.reflector import Reflector, WatchSettings
from pyngress.sources.kubernetes.store import Change, Store

SLICES = "EndpointSlice"
STATUS_INPUTS = ("Ingress", "IngressClass", "Service")


@dataclass(slots=True)
class RebuildCounters:
    full: int = 0
    fast: int = 0
    unchanged: int = 0
    applied: int = 0


class KubernetesSource:
    def __init__(self, client: KubeClient, options: CompileOptions, apply: Callable[[Snapshot], object], *,
                 namespace: str = "", debounce: float = 0.1, settings: WatchSettings | None = None,
                 rng: random.Random | None = None, log: logging.Logger | None = None) -> None:
        self.client = client
        self.options = options
        self.apply = apply
        self.namespace = namespace
        self.debounce = debounce
        self.settings = settings or WatchSettings()
        self.rng = rng or random.Random()
        self.log = log or logging.getLogger(__name__)
        self.synced = asyncio.Event()  # readiness: every kind listed once and the first Snapshot applied
        # set on every change of what status publishing reads (Ingress, IngressClass, Service), status-only
        # changes included; the publisher clears it
        self.updated = asyncio.Event()
        self.failed: BaseException | None = None  # a reflector died of a bug: run() re-raises it
        self.current: Snapshot | None = None
        self.counters = RebuildCounters()
        # (slot, resource, namespace): a slot names one watch and its store; ConfigMaps get one watch per name
        # (field selectors cannot OR two names): the controller's own, then the tcp/udp services ones (issue 9)
        self._watched = [(res.kind, res, ns) for res, ns in [
            (r.INGRESS, namespace), (r.INGRESS_CLASS, ""), (r.SERVICE, namespace), (r.ENDPOINT_SLICE, namespace),
            (r.SECRET, namespace)]]
        self._watched += r.configmap_watches((options.configmap, *options.streams.configmaps), namespace)
        self.stores = {slot: Store(res.kind) for slot, res, _ in [*self._watched, ("Pod", r.POD, namespace)]}
        self.reflectors: dict[str, Reflector] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._failure_seen = asyncio.Event()  # set only on failure: lets the initial sync wait end early
        self._dirty_kinds: set[str] = set()
        self._dirty_services: set[tuple[str, str]] = set()

    async def run(self) -> None:
        """Watch and rebuild until cancelled; readiness (`synced`) after the first full build."""
        try:
            for slot, resource, namespace in self._watched:
                self._start(slot, resource, namespace)
            await self._wait_synced(list(self.reflectors.values()))
            if self._wants_pods():
                await self._wait_synced([self._start("Pod", r.POD, self.namespace)])
            self._wake.clear()
            self._dirty_kinds.clear()
            await self._rebuild(force_full=True)
            self.synced.set()
            while True:
                await self._wake.wait()
                self._raise_if_failed()
                await asyncio.sleep(self.debounce)  # let the rest of the burst arrive
                self._wake.clear()
                await self._rebuild()
        finally:
            await self._stop_all()

    def request_rebuild(self) -> None:
        """Recompile from the caches now (SIGHUP, as in file mode). Safe to call from any callback."""
        self._dirty_kinds.add("(requested)")
        self._wake.set()

    def _start(self, slot: str, resource: r.Resource, namespace: str) -> Reflector:
        reflector = Reflector(self.client, resource, namespace, self.stores[slot], self._changed,
                              settings=self.settings, rng=self.rng, log=self.log)
        self.reflectors[slot] = reflector
        task = asyncio.create_task(reflector.run(), name=f"watch {slot}")
        task.add_done_callback(self._reflector_done)
        self._tasks[slot] = task
        return reflector

    def _reflector_done(self, task: asyncio.Task[None]) -> None:
        """A reflector only ends by cancellation; any other end is a bug. Stop rather than serve a cache that
        silently stopped following the cluster (the process exits and Kubernetes restarts it)."""
        if task.cancelled() or self.failed is not None:
            return
        self.failed = task.exception() or RuntimeError(f"{task.get_name()} ended")
        self.log.error("%s failed: %r", task.get_name(), self.failed)
        self._wake.set()
        self._failure_seen.set()

    async def _wait_synced(self, reflectors: Sequence[Reflector]) -> None:
        waits = [asyncio.ensure_future(x.synced.wait()) for x in reflectors]
        failure = asyncio.ensure_future(self._failure_seen.wait())
        either: list[asyncio.Future[Any]] = [asyncio.gather(*waits), failure]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (*either, *waits):
                w.cancel()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.failed is not None:
            raise RuntimeError("a Kubernetes watch failed") from self.failed

    async def _stop(self, kind: str) -> None:
        task = self._tasks.pop(kind, None)
        self.reflectors.pop(kind, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # a failed one was reported when it failed

    async def _stop_all(self) -> None:
        for kind in list(self._tasks):
            await self._stop(kind)

    def _changed(self, changes: Sequence[Change]) -> None:
        """Called by the reflectors, on the loop, right after their store changed. No await here."""
        for change in changes:
            if change.kind in STATUS_INPUTS:
                self.updated.set()
            if not change.spec_changed:
                continue
            self._dirty_kinds.add(change.kind)
            if change.kind == SLICES:
                self._note_slice_services(change)
            self._wake.set()

    def _note_slice_services(self, change: Change) -> None:
        for entry in (change.old, change.new):
            obj = entry.obj if entry is not None else None
            if isinstance(obj, EndpointSlice):
                self._dirty_services.add((obj.meta.namespace, obj.service_name))
            elif entry is not None:
                self._dirty_kinds.add("EndpointSlice?")  # a slice we could not parse: no shortcut

    async def _rebuild(self, *, force_full: bool = False) -> None:
        kinds, services = self._dirty_kinds, self._dirty_services
        self._dirty_kinds, self._dirty_services = set(), set()
        if not kinds and not force_full:
            return
        old = self.current
        version = old.version + 1 if old is not None else 1
        new = None
        if old is not None and kinds == {SLICES} and not force_full:
            new = self._fast(old, services, version)
        if new is None:
            # one object may be in two ConfigMap stores (--configmap pyngress and ingress/pyngress): once
            objects = list({(o.kind, o.meta.key): o for store in self.stores.values() for o in store.objects()}
                           .values())
            problems = [p for store in self.stores.values() for p in store.problems()]
            new = await asyncio.to_thread(compile_snapshot, objects, self.options, version=version,
                                          problems=problems, now=time.time())  # certificate expiry
            self.counters.full += 1
        else:
            self.counters.fast += 1
        self._install(old, new)
        await self._adjust_pod_watch()

    def _fast(self, old: Snapshot, services: set[tuple[str, str]], version: int) -> Snapshot | None:
        svc_store, slice_store = self.stores["Service"].entries, self.stores[SLICES].objects()
        by_key = {(s.meta.namespace, s.meta.name): s for k in services
                  if (e := svc_store.get(f"{k[0]}/{k[1]}")) is not None and isinstance(s := e.obj, Service)}
        slices: dict[tuple[str, str], list[EndpointSlice]] = {k: [] for k in services}
        for obj in slice_store:
            if isinstance(obj, EndpointSlice) and (obj.meta.namespace, obj.service_name) in slices:
                slices[(obj.meta.namespace, obj.service_name)].append(obj)
        pods = {(p.meta.namespace, p.meta.name): p for p in self.stores["Pod"].objects() if isinstance(p, Pod)}
        return refresh_endpoints(old, services, by_key, slices, pods, version=version)

    def _install(self, old: Snapshot | None, new: Snapshot) -> None:
        if old is not None and dataclasses.replace(new, version=old.version) == old:
            self.counters.unchanged += 1
            self.log.debug("cluster changed, configuration did not: still serving version %d", old.version)
            return
        self.apply(new)
        self.current = new
        self.counters.applied += 1
        if old is None:  # issue 8: config generation, reloads and their time in /metrics and /status
            metrics.config_loaded(new.version)
        else:
            metrics.config_reload(True, new.version)
        for problem in sorted(set(new.problems) - set(old.problems if old else ()), key=new.problems.index):
            self.log.warning("%s", problem)
        self.log.info("configuration version %d applied: %d routes, %d backends, %d problems", new.version,
                      len(new.routes), len(new.backends), len(new.problems))

    def _wants_pods(self) -> bool:
        return any(WEIGHT_BY in o.meta.annotations for o in self.stores["Service"].objects())

    async def _adjust_pod_watch(self) -> None:
        """Pods are watched only while some Service weighs its endpoints by CPU: on a big cluster they are
        the largest and busiest kind, and nothing else needs them."""
        running = "Pod" in self._tasks
        if self._wants_pods() and not running:
            self._start("Pod", r.POD, self.namespace)  # its first list marks Pod dirty and rebuilds
        elif running and not self._wants_pods():
            await self._stop("Pod")
            self.stores["Pod"] = Store("Pod")
