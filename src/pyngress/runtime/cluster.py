"""`pyngress run --kubernetes`: one worker serving what the API server says, electing a leader for status.

The proxy starts with an empty configuration (every request 404) and listens at once; the source lists every
kind, builds the first Snapshot and sets `source.synced`, which is what readiness must report (`/readyz`
served by the admin listener reads it; until then the Pod gets no traffic from its Service). Status writing
runs beside it when enabled: a `LeaderElector` on the Lease `--election-id` and a `StatusPublisher` that
acts only while this replica leads (and, with `--serve-load-balancer-services`, writes the status of the
LoadBalancer Services whose ports listen here). On SIGTERM the leader of the last controller Pod clears that
status again (`--update-status-on-shutdown`, as ingress-nginx) before the Lease is released.

With `--workers N` every worker runs all of this itself: N watches per replica and N election candidates
(their identities carry the pid, so exactly one of them leads). In a cluster, prefer more replicas of one
worker each: Kubernetes spreads them, and the API server load stays one watch set per Pod. SIGHUP recompiles
from the caches (the watches themselves are always current); SIGTERM and SIGINT drain and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyngress.model import Snapshot
from pyngress.observability.wiring import observe_worker
from pyngress.runtime.health_link import HealthLink
from pyngress.runtime.https_listener import listen_https
from pyngress.runtime.lifecycle import join_group, pre_stop, settle_heap
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.tls_contexts import TLSContexts
from pyngress.sources.kubernetes import ApiError, KubernetesSource, connect
from pyngress.sources.kubernetes.election import LeaderElector
from pyngress.sources.kubernetes.replicas import last_replica
from pyngress.sources.kubernetes.service_status import ServiceStatus
from pyngress.sources.kubernetes.status import StatusPublisher

if TYPE_CHECKING:
    from pyngress.runtime.app import RunOptions

log = logging.getLogger("pyngress")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class KubeRunOptions:
    kubeconfig: str | None = None  # None: in-cluster, else $KUBECONFIG / ~/.kube/config
    context: str | None = None
    namespace: str = ""  # "" watches every namespace
    election_id: str = "pyngress-leader"
    election_namespace: str = ""  # "" = the Pod's own namespace (POD_NAMESPACE or the service account's)
    publish_service: str = ""
    publish_status_address: tuple[str, ...] = ()
    update_status: bool = True
    update_status_on_shutdown: bool = True  # the last replica's leader clears the status it wrote
    debounce: float = 0.1


def own_namespace() -> str:
    with contextlib.suppress(OSError):
        return os.environ.get("POD_NAMESPACE") or SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    return "default"


def identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"


async def serve_cluster(options: RunOptions, *, reuse_port: bool, loop_name: str = "asyncio",
                        socks: list[socket.socket] | None = None, slot: int = 0, link: HealthLink | None = None,
                        control: socket.socket | None = None, shared: mmap.mmap | None = None) -> int:
    """`socks`, `slot`, `link`: this worker's place in a `--workers N` group (issue 7, runtime.workers)."""
    kube = options.kube
    assert kube is not None
    try:
        client = await connect(kube.kubeconfig, kube.context)
    except Exception as exc:  # a missing kubeconfig, bad credentials file: say so and stop
        log.error("cannot configure the Kubernetes client: %s", exc)
        return 1
    try:
        server = ProxyServer(Snapshot(version=0), probing=slot == 0)  # issue 7: one prober per group
        join_group(server, slot, link)
        http_sock, https_sock = socks if socks is not None else (None, None)
        # issue 5: limits shared by workers, Redis for global limits
        server.flow.configure(workers=options.workers, redis_url=options.redis_url, shared=shared, slot=slot)
        serve_lb = options.compile.streams.serve_load_balancer_services

        def apply(snapshot: Snapshot) -> None:
            server.install(snapshot)
            if serve_lb:  # issue 9: which LoadBalancer ports listen may have changed: publish their status
                source.updated.set()

        source = KubernetesSource(client, options.compile, apply, namespace=kube.namespace,
                                  debounce=kube.debounce, log=log)
        try:
            port = await server.listen(options.host, options.http_port, reuse_port=reuse_port, sock=http_sock)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", options.host, options.http_port, exc.strerror or exc)
            return 2
        log.info("worker %d serving http on %s:%d (%s, cluster mode: %s)", os.getpid(), options.host, port,
                 loop_name, f"namespace {kube.namespace}" if kube.namespace else "all namespaces")
        assert options.fake_certificate is not None  # app.run() made it
        try:  # issue 4's HTTPS listener: its certificates follow each install, as in file mode
            https_port = await listen_https(server, options.host, options.https_port, reuse_port=reuse_port,
                                            contexts=TLSContexts(*options.fake_certificate),
                                            redirect_port=options.https_redirect_port, sock=https_sock)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", options.host, options.https_port, exc.strerror or exc)
            await server.drain(0)
            return 2
        log.info("worker %d serving https on %s:%d", os.getpid(), options.host, https_port)
        observer = await observe_worker(server, source, options, control)  # issue 8: admin (readyz: synced)
        settle_heap()
        tasks = [asyncio.create_task(source.run(), name="kubernetes source")]
        publisher: StatusPublisher | None = None
        if kube.update_status and (kube.publish_service or kube.publish_status_address):
            elector = LeaderElector(client, kube.election_namespace or own_namespace(), kube.election_id,
                                    identity(), log=log)
            services = ServiceStatus(client, source, lambda: server.streams.listeners,
                                     exclude=_qualified(kube.publish_service), log=log) if serve_lb else None
            publisher = StatusPublisher(client, source, elector, publish_service=kube.publish_service,
                                        addresses=kube.publish_status_address, services=services, log=log)
            tasks += [asyncio.create_task(elector.run()), asyncio.create_task(publisher.run())]
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, source.request_rebuild)
        failed = await _until_stopped(tasks)
        if not failed:
            await pre_stop(server, options.shutdown_grace_period, link)  # issue 7: readiness fails first
        if publisher is not None and kube.update_status_on_shutdown and not failed:
            tasks[-1].cancel()  # the publisher's loop: no write of its own may race the clearing
            await asyncio.gather(tasks[-1], return_exceptions=True)
            with contextlib.suppress(ApiError, TimeoutError):  # still the leader: the elector runs on
                await asyncio.wait_for(publisher.shutdown(lambda: last_replica(client, log)), 10)
        log.info("draining (grace %.0fs)", options.grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.drain(options.grace)
        await observer.close()
        log.info("worker %d stopped", os.getpid())
        return 1 if failed else 0
    finally:
        with contextlib.suppress(ApiError):
            await client.close()


def _qualified(name: str) -> str:
    """ "ns/name" as written, "name" in "default" (as --publish-service reads it)."""
    return name if "/" in name or not name else f"default/{name}"


async def _until_stopped(tasks: list[asyncio.Task[None]]) -> bool:
    """Until SIGTERM/SIGINT (False), or one of the long-running tasks dies (True: a bug or a watch that
    cannot go on; stop, exit 1 and let Kubernetes restart us rather than serve a stale configuration)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    failed = False
    for task in done:
        if task is not stopper and not task.cancelled():
            failed = True
            log.error("%s failed: %r", task.get_name(), task.exception())
    return failed
