"""One worker's health state and what it does to the balancers (issue 7). Runs on the event loop thread.

`HealthManager` joins the pure state machines of `pyngress.health` to the live data plane:

* **Which endpoints serve.** `endpoints_for(backend)` (what `Dataplane` hands every balancer, on install and
  on every health change) applies `health.selection.effective`: ready endpoints not down (active check failed
  or ejected), the terminating fallback, panic mode, slow-start weights. A health change never costs the hot
  path a per-pick test: the affected balancers are rebuilt off the request path (`refresh`, scheduled with
  `call_soon`) through their ordinary `update`, which keeps their live state (cursors, rings, affinity tables)
  for the endpoints that stay.
* **Passive ejection.** The upstream side reports each attempt's outcome on the endpoint's `Record` (held by
  the connection: no lookup per request); `failed` runs only on failures. Ejection is per worker, as nginx's
  max_fails is: each worker judges from the traffic it sees.
* **Active checks.** Probed by `runtime.probe.Prober` in one process of the group (see `runtime.app`): in the
  worker itself with `--workers 1`, in worker 0 otherwise, which publishes the set of failing endpoints to the
  others over `runtime.health_link`. Results arrive here through `set_active`/`set_active_down`.
* **Retry budget** per backend (`budget_allows`), fed by the per-endpoint attempt counters once a tick.
* **Draining.** An endpoint that leaves the configuration gets no new requests at once (its balancers no
  longer hold it); its in-flight requests finish; its idle pooled connections close at once and busy ones
  after their response (`UpstreamPool.retain`); whatever is still open `worker-shutdown-timeout` later is
  aborted (`tick`).

The ticker calls `tick(now)` about once a second: ends ejections that are over, steps slow-start ramps,
samples budgets, enforces the drain deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from pyngress.health.budget import RetryBudget
from pyngress.health.outlier import OutlierDetector, OutlierPolicy, Record
from pyngress.health.selection import effective, ramp_fraction
from pyngress.model import ActiveCheck, Backend, Endpoint, ProxySettings, Route, Snapshot

if TYPE_CHECKING:
    from pyngress.runtime.state import Serving

log = logging.getLogger("pyngress.health")

Publisher = Callable[[frozenset[str]], None]


class HealthManager:
    def __init__(self, now: float, settings: ProxySettings) -> None:
        self.now = now
        self.detector = OutlierDetector(_policy(settings))
        self.settings = settings
        self.active_down: set[str] = set()  # failing their active check (from the prober or the link)
        self.panic: set[str] = set()  # backend keys serving in panic mode
        self.budgets: dict[str, RetryBudget] = {}
        self.entered: dict[str, float] = {}  # endpoint key -> when it (re)entered rotation (slow start)
        self.removed: dict[str, float] = {}  # endpoint key -> when it left the configuration (drain deadline)
        self.targets: dict[str, tuple[Endpoint, ActiveCheck]] = {}  # what the prober should probe
        self.publish: Publisher | None = None  # set in the probing worker of a group: tell the others
        self.publish_from = 0.0  # not before (see publish_after_warmup)
        self.on_targets: Callable[[dict[str, tuple[Endpoint, ActiveCheck]]], None] | None = None
        self.abort_endpoint: Callable[[str], int] | None = None  # pool: abort connections to a key
        self.schedule: Callable[[Callable[[], None]], object] | None = None  # loop.call_soon
        self._down: frozenset[str] = frozenset()
        self._known: set[str] | None = None  # endpoint keys of the installed config (None: nothing yet)
        self._backends: dict[str, Backend] = {}
        self._members: dict[str, list[str]] = {}  # endpoint key -> backend keys
        self._serving: Serving | None = None
        self._pending: set[str] = set()  # backend keys to refresh at the next call_soon
        self._ramping: set[str] = set()  # backend keys with a slow-start ramp in progress at the last tick
        self.refreshes = 0  # balancer rebuilds done (for tests)
        self.retries = 0  # retries allowed, in all (for tests and metrics)

    # -- configuration -----------------------------------------------------------------------------------

    def prepare(self, snapshot: Snapshot, now: float) -> None:
        """Before a snapshot is installed: groups, new and removed endpoints, probe targets, budgets."""
        self.now = now
        self.settings = settings = snapshot.settings
        self.detector.policy = _policy(settings)
        backends = {b.key: b for b in _backends(snapshot)}
        keys = {e.key for b in backends.values() for e in b.endpoints}
        if self._known is not None:
            for key in keys - self._known:
                self.entered[key] = now  # a new endpoint: slow start, where its backend asks for it
                self.removed.pop(key, None)
            for key in self._known - keys:
                self.removed[key] = now
                self.entered.pop(key, None)
                self.active_down.discard(key)
        self._known = keys
        self._backends = backends
        self._members = {}
        for b in backends.values():
            for e in b.endpoints:
                self._members.setdefault(e.key, []).append(b.key)
        self.detector.set_groups({b.key: [e.key for e in b.endpoints] for b in backends.values()})
        self.budgets = {k: self.budgets.get(k) or self._budget(k, now) for k in backends}
        for budget in self.budgets.values():
            budget.percent, budget.window = settings.retry_budget_percent, settings.retry_budget_window
            budget.min_retries = settings.retry_budget_min_retries
        self.targets = {e.key: (e, b.health.active) for b in backends.values() if b.health.active
                        for e in b.endpoints}
        if self.on_targets is not None:
            self.on_targets(self.targets)
        self._recompute_down()

    def installed(self, serving: Serving) -> None:
        self._serving = serving

    def pooled_keys(self, keys: frozenset[str]) -> frozenset[str]:
        """Of the configuration's endpoint keys, those whose idle connections the pool keeps: not the
        terminating endpoints of backends that have ready ones (they only serve sticky users now, who may
        open a connection again; Kubernetes will remove them soon)."""
        draining = {e.key for b in self._backends.values() if any(not x.terminating for x in b.endpoints)
                    for e in b.endpoints if e.terminating}
        ready = {e.key for b in self._backends.values() for e in b.endpoints if not e.terminating}
        return keys - (draining - ready) if draining else keys

    def within_drain(self, keys: frozenset[str]) -> frozenset[str]:
        """`keys` plus the endpoints removed less than worker-shutdown-timeout ago: what open tunnels
        (WebSocket) may still use."""
        return keys | frozenset(self.removed) if self.removed else keys

    def endpoints_for(self, backend: Backend) -> Sequence[Endpoint]:
        """The endpoints `backend`'s balancers get now (see `health.selection`)."""
        ramp = self._ramp(backend) if backend.health.slow_start > 0 else None
        chosen, panic = effective(backend.endpoints, self._down, ramp)
        if panic != (backend.key in self.panic):
            if panic:
                self.panic.add(backend.key)
                log.warning("%s: every endpoint is unhealthy: panic mode, balancing over all %d", backend.key,
                            len(chosen))
            else:
                self.panic.discard(backend.key)
                log.info("%s: healthy endpoints again, panic mode over", backend.key)
        return chosen

    # -- passive outcomes (called from the upstream side) -----------------------------------------------

    def record(self, key: str) -> Record:
        return self.detector.record(key)

    def failed(self, rec: Record) -> None:
        if self.detector.failure(rec, self.now):
            log.warning("endpoint %s ejected for %.0fs after %d consecutive failures (ejected %d times)",
                        rec.key, rec.ejected_until - self.now, self.detector.policy.consecutive,
                        rec.times_ejected)
            self._changed([rec.key])

    def succeeded(self, rec: Record) -> None:
        self.detector.success(rec)

    def connect_failed(self, key: str) -> None:
        rec = self.detector.record(key)
        rec.attempts += 1
        self.failed(rec)

    # -- active results -------------------------------------------------------------------------------

    def set_active(self, key: str, healthy: bool) -> None:
        if healthy:
            self.active_down.discard(key)
            self.detector.uneject(key, self.now)
            self.entered[key] = self.now
        else:
            self.active_down.add(key)
        log.warning("endpoint %s %s its active health check", key, "passes" if healthy else "fails")
        self._publish()
        self._changed([key])

    def set_active_down(self, keys: Iterable[str]) -> None:
        """The full set of failing endpoints, from the probing worker (idempotent: sent again each second)."""
        down = set(keys) & (self._known or set())
        if down == self.active_down:
            return
        for key in self.active_down - down:
            self.detector.uneject(key, self.now)
            self.entered[key] = self.now
        changed = self.active_down ^ down
        self.active_down = down
        self._changed(changed)

    # -- retries ----------------------------------------------------------------------------------------

    def budget_allows(self, backend_key: str) -> bool:
        budget = self.budgets.get(backend_key)
        allowed = budget is None or budget.allow(self.now, self._attempts(backend_key))
        self.retries += allowed
        return allowed

    # -- the ticker -------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.now = now
        back = self.detector.sweep(now)
        for key in back:
            self.entered[key] = now
            log.info("endpoint %s back from ejection, on probation", key)
        for backend_key, budget in self.budgets.items():
            budget.sample(now, self._attempts(backend_key))
        ramping = {b.key for b in self._backends.values() if b.health.slow_start > 0 and any(
            now - self.entered.get(e.key, -1e18) < b.health.slow_start for e in b.endpoints)}
        # a backend that was ramping at the last tick gets one more rebuild: its endpoints at full weight
        steps, self._ramping = ramping | self._ramping, ramping
        if back or steps:
            self._changed(back, extra_backends=steps)
        self._drain_deadline(now)
        self._publish()

    def publish_after_warmup(self, publish: Publisher, now: float) -> None:
        """Make this the probing process of a group. Its first verdicts are held back until every endpoint
        had time to fail its check: a restarted prober starts with every endpoint healthy, and publishing that
        at once would bring back, in every other worker, endpoints the previous prober had taken out."""
        self.publish = publish
        checks = [check for _, check in self.targets.values()]
        self.publish_from = now + max((c.interval * (c.unhealthy_threshold + 1) + c.timeout for c in checks),
                                      default=0.0)

    def _publish(self) -> None:
        if self.publish is not None and self.now >= self.publish_from:
            self.publish(frozenset(self.active_down))

    def _drain_deadline(self, now: float) -> None:
        limit = self.settings.worker_shutdown_timeout
        for key, since in list(self.removed.items()):
            if now - since >= limit:
                del self.removed[key]
                aborted = self.abort_endpoint(key) if self.abort_endpoint is not None else 0
                if aborted:
                    log.warning("endpoint %s removed %.0fs ago: %d connections still open aborted", key,
                                limit, aborted)

    # -- rebuilding balancers ---------------------------------------------------------------------------

    def _changed(self, keys: Iterable[str], extra_backends: Iterable[str] = ()) -> None:
        self._recompute_down()
        backends = {b for k in keys for b in self._members.get(k, ())} | set(extra_backends)
        if not backends:
            return
        first = not self._pending
        self._pending |= backends
        if not first:
            return
        if self.schedule is not None:
            self.schedule(self._refresh_pending)  # off the request path that noticed the failure
        else:
            self._refresh_pending()

    def _refresh_pending(self) -> None:
        pending, self._pending = self._pending, set()
        serving = self._serving
        if serving is None:
            return
        routes: list[Route] = list(serving.snapshot.routes)
        if serving.default_route is not None:
            routes.append(serving.default_route)
        done: set[str] = set()
        for route in routes:
            key = route.balancer_key
            if route.backend.key in pending and key not in done:
                done.add(key)
                balancer = serving.balancers.get(key)
                if balancer is not None:
                    balancer.update(self.endpoints_for(self._backends.get(route.backend.key, route.backend)))
                    self.refreshes += 1

    def _recompute_down(self) -> None:
        self._down = frozenset(self.active_down) | self.detector.ejected

    def _ramp(self, backend: Backend) -> dict[str, float]:
        window = backend.health.slow_start
        return {e.key: ramp_fraction(self.entered[e.key], self.now, window)
                for e in backend.endpoints if e.key in self.entered}

    def _attempts(self, backend_key: str) -> int:
        backend = self._backends.get(backend_key)
        if backend is None:
            return 0
        records = self.detector.records
        return sum(r.attempts for e in backend.endpoints if (r := records.get(e.key)) is not None)

    def _budget(self, backend_key: str, now: float) -> RetryBudget:
        s = self.settings
        budget = RetryBudget(s.retry_budget_percent, s.retry_budget_window, s.retry_budget_min_retries)
        budget.sample(now, self._attempts(backend_key))
        return budget

    @property
    def down(self) -> frozenset[str]:
        return self._down

    def endpoint_health(self, key: str) -> tuple[str, bool, int]:
        """observability's HealthView: (state, ejected now, times ejected) of an endpoint. "unhealthy" when its
        active check fails; "draining" when it left the configuration or is terminating; else "healthy" if an
        active check passes for it, "ready" (EndpointSlice readiness only) when none is configured."""
        rec = self.detector.records.get(key)
        ejected = rec is not None and rec.ejected
        times = rec.times_ejected if rec is not None else 0
        if key in self.active_down:
            return "unhealthy", ejected, times
        if key in self.removed:
            return "draining", ejected, times
        return ("healthy" if key in self.targets else "ready"), ejected, times

    def describe(self) -> dict[str, dict[str, object]]:
        """Endpoint key -> its health, for an admin API or a dashboard (observability reads this)."""
        out: dict[str, dict[str, object]] = {}
        for key in sorted(self._known or ()):
            rec = self.detector.records.get(key)
            out[key] = {
                "active_healthy": key not in self.active_down,
                "ejected_for": max(0.0, rec.ejected_until - self.now) if rec is not None and rec.ejected else 0.0,
                "times_ejected": rec.times_ejected if rec is not None else 0,
                "consecutive_failures": rec.consecutive if rec is not None else 0,
                "probation": rec.probation if rec is not None else False,
                "draining": False,
            }
        for key in self.removed:
            out[key] = {"draining": True}
        return out


def _policy(settings: ProxySettings) -> OutlierPolicy:
    return OutlierPolicy(settings.outlier_consecutive_failures, settings.outlier_base_ejection_time,
                         settings.outlier_max_ejection_time, settings.max_ejection_percent)


def _backends(snapshot: Snapshot) -> list[Backend]:
    found = {r.backend.key: r.backend for r in snapshot.routes}
    found.update(snapshot.backends)  # the compiled map wins: it carries the health spec an Ingress asked for
    if snapshot.default_backend is not None:
        found.setdefault(snapshot.default_backend.key, snapshot.default_backend)
    return list(found.values())
