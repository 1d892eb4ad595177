"""`pyngress check --kubernetes`: list the cluster once and compile it, as `run --kubernetes` would serve it.

The same `KubernetesSource` as cluster mode, stopped as soon as it is synced (every kind listed in full and
the first Snapshot built), so what `check` prints is exactly what a controller starting now would serve:
the routing table, the default backend and every Problem, named by object and field.
"""

from __future__ import annotations

import asyncio
import logging

from pyngress.config import CompileOptions
from pyngress.model import Snapshot
from pyngress.sources.kubernetes.client import connect
from pyngress.sources.kubernetes.source import KubernetesSource


async def snapshot_of_cluster(options: CompileOptions, *, kubeconfig: str | None = None,
                              context: str | None = None, namespace: str = "",
                              timeout: float = 60.0) -> Snapshot:
    """The Snapshot of the cluster now; TimeoutError if the lists do not complete within `timeout`."""
    client = await connect(kubeconfig, context)
    try:
        source = KubernetesSource(client, options, lambda snapshot: None, namespace=namespace,
                                  log=logging.getLogger("pyngress.check"))
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(asyncio.shield(source.synced.wait()), timeout)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert source.current is not None  # synced means built
        return source.current
    finally:
        await client.close()
