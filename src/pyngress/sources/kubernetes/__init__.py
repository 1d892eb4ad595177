"""Cluster mode: list+watch the API server into per-kind caches, compile, swap; elect a leader; publish status.

- `source.KubernetesSource`: the reflectors, the coalescing rebuild loop and readiness (`synced`).
- `reflector.Reflector`: list then watch one kind (bookmarks, 410 relist, stall detection, backoff).
- `election.LeaderElector` and `status.StatusPublisher`: only the Lease holder writes Ingress status.
- Pure parts, tested without a loop: `store` (cache and diffs), `events` (watch decoding), `backoff`,
  `resources` (paths and selectors), `lease` (the Lease decision), `addresses` (the status to write).
"""

from pyngress.sources.kubernetes.client import ApiError, KubeClient, connect
from pyngress.sources.kubernetes.reflector import Reflector, WatchSettings
from pyngress.sources.kubernetes.source import KubernetesSource

__all__ = ["ApiError", "KubeClient", "KubernetesSource", "Reflector", "WatchSettings", "connect"]
