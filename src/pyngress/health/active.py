"""Active health checks: the threshold state machine and the probe schedule. Pure; rng and `now` passed in.

An endpoint under an active check starts **healthy**: Kubernetes readiness already vouched for it, and starting
unhealthy would make every reload or new pod wait `healthy_threshold` probes before serving (HAProxy and
ingress-nginx's upstream checks start up too; Envoy starts hosts unhealthy because it has no readiness to lean
on). `unhealthy_threshold` consecutive failures take it out; `healthy_threshold` consecutive passes bring it
back. A result that agrees with the current state resets the opposite count.

Schedule: the first probe of an endpoint comes after a uniform random fraction of the interval, then every
`interval` +-15 %, so probes of many endpoints (and of many replicas) spread over time instead of firing
together; and because the state is keyed by endpoint and kept across reloads, a reload starts no new probes
for endpoints that are already being probed (no storm after a reload).
"""

from __future__ import annotations

import random

from pyngress.model import ActiveCheck

JITTER = 0.15


class CheckState:
    __slots__ = ("fails", "healthy", "passes", "probes")

    def __init__(self) -> None:
        self.healthy = True
        self.passes = 0
        self.fails = 0
        self.probes = 0  # probes run (for tests and metrics)

    def observe(self, ok: bool, check: ActiveCheck) -> bool:
        """Count one probe result; True when the endpoint changed state."""
        self.probes += 1
        if ok:
            self.fails = 0
            self.passes += 1
            if not self.healthy and self.passes >= check.healthy_threshold:
                self.healthy, self.passes = True, 0
                return True
        else:
            self.passes = 0
            self.fails += 1
            if self.healthy and self.fails >= check.unhealthy_threshold:
                self.healthy, self.fails = False, 0
                return True
        return False


def first_delay(check: ActiveCheck, rng: random.Random) -> float:
    return rng.uniform(0.0, check.interval)


def next_delay(check: ActiveCheck, rng: random.Random) -> float:
    return check.interval * rng.uniform(1.0 - JITTER, 1.0 + JITTER)
