"""Which endpoints a backend's balancers get, given health: the one place that decides rotation. Pure.

Input: the backend's endpoints as configured (ready ones, and serving && terminating ones marked
`terminating`), the keys that are down (active check failed, or ejected), and the slow-start fractions.
Output: the list handed to `Balancer.update`:

1. **Ready** endpoints serve. When none is ready, the **terminating** ones serve instead (KEP-1669's
   fallback, as kube-proxy does with ProxyTerminatingEndpoints).
2. Among those, the ones not down serve. When every one is down: **panic mode**, all of them serve (Envoy's
   panic threshold at its limit: answering 503 to everyone is worse than trying endpoints that may be fine;
   a health verdict can be wrong, a 503 is certain).
3. The other terminating endpoints that are not down stay in the list with weight 0: no balancer picks them,
   but session affinity keeps the users they already have (no new sticky users, existing ones stay).
4. Slow start: with a window set, every weight is scaled by `SCALE` so that a ramping endpoint's share can
   grow in small steps; a ramping endpoint gets `max(1, round(weight * SCALE * fraction))`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from pyngress.model import Endpoint

SCALE = 10  # weight resolution while slow start is on: ramps in steps of at most 10 %


def effective(endpoints: Sequence[Endpoint], down: Collection[str], ramp: Mapping[str, float] | None = None,
              ) -> tuple[list[Endpoint], bool]:
    """(endpoints for the balancers, panic?)."""
    ready = [e for e in endpoints if not e.terminating and e.weight > 0]
    terminating = [e for e in endpoints if e.terminating and e.weight > 0]
    serving = ready or terminating
    healthy = [e for e in serving if e.key not in down]
    panic = bool(serving) and not healthy
    chosen = healthy or serving
    if ramp is not None:
        chosen = [_ramped(e, ramp.get(e.key)) for e in chosen]
    picked = {e.key for e in chosen}
    sticky = [replace(e, weight=0) for e in terminating if e.key not in picked and e.key not in down]
    return chosen + sticky, panic


def _ramped(endpoint: Endpoint, fraction: float | None) -> Endpoint:
    weight = endpoint.weight * SCALE
    if fraction is not None and fraction < 1.0:
        weight = max(1, round(weight * fraction))
    return replace(endpoint, weight=weight)


def ramp_fraction(since: float, now: float, window: float) -> float:
    """Slow start: the share of its weight an endpoint has `now`, having (re)entered rotation at `since`."""
    if window <= 0 or now - since >= window:
        return 1.0
    return max(0.0, (now - since) / window)
