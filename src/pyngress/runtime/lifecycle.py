"""Worker lifecycle hooks shared by file mode (`runtime.app`) and cluster mode (`runtime.cluster`), issue 7.

- `join_group`: in a `--workers N` group, worker 0 publishes its active-check verdicts to the others and the
  others follow them (`runtime.health_link`).
- `pre_stop`: on SIGTERM, readiness fails at once (`ProxyServer.begin_shutdown`), and the listeners keep
  accepting for shutdown-grace-period so the outer load balancer notices before connections are refused.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from pyngress.runtime.health_link import HealthLink
from pyngress.runtime.server import ProxyServer

log = logging.getLogger("pyngress")


def join_group(server: ProxyServer, slot: int, link: HealthLink | None) -> None:
    if link is None:
        return
    loop = asyncio.get_running_loop()
    if slot == 0:
        server.health.publish_after_warmup(link.publish, loop.time())
    else:
        link.subscribe(loop, server.health)


async def pre_stop(server: ProxyServer, grace_period: float | None, link: HealthLink | None) -> None:
    """`grace_period`: the command line's --shutdown-grace-period, None for the ConfigMap's."""
    server.begin_shutdown()
    if grace_period is None:
        grace_period = server.dataplane.serving.settings.shutdown_grace_period
    if grace_period > 0:
        log.info("not ready; closing listeners in %gs", grace_period)
        await asyncio.sleep(grace_period)
    if link is not None:
        link.close(asyncio.get_running_loop())


def settle_heap() -> None:
    """Everything allocated while starting (modules, the first configuration) lives as long as the worker:
    moved out of the cyclic collector's reach, so that its full collections do not walk it and stall requests.
    Later garbage is collected as before; a first configuration replaced by a reload is still freed by its
    reference counts (only parts of it in reference cycles, if any, stay)."""
    gc.collect()
    gc.freeze()
