"""`pyngress run`: workers, signals and the file source around a ProxyServer.

With `--workers 1` the proxy runs in this process. With N > 1 the parent forks N workers before any event
loop exists; each serves its own SO_REUSEPORT listening socket, which the parent binds and keeps open, and
restarts a worker that dies (`runtime.workers`); each reads and watches the configuration itself (a reload is
at most one poll interval apart between workers). Worker 0 runs the active health checks for the group.

Signals in a worker: SIGHUP reloads now; SIGTERM and SIGINT first turn readiness off (`ProxyServer.ready`),
keep serving for shutdown-grace-period, then drain (stop accepting, finish in-flight requests within the grace
period) and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pyngress.config import CompileOptions
from pyngress.observability.wiring import observe_worker
from pyngress.runtime import flow
from pyngress.runtime.health_link import HealthLink
from pyngress.runtime.https_listener import listen_https
from pyngress.runtime.lifecycle import join_group, pre_stop, settle_heap
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.tls_contexts import TLSContexts, fake_certificate
from pyngress.runtime.workers import admin_in_thread, supervise
from pyngress.sources.files import FileSource

if TYPE_CHECKING:
    from pyngress.runtime.cluster import KubeRunOptions

log = logging.getLogger("pyngress")


@dataclass(frozen=True)
class RunOptions:
    paths: tuple[Path, ...]
    compile: CompileOptions
    host: str = "0.0.0.0"
    http_port: int = 8080
    workers: int = 1
    grace: float = 30.0
    poll_interval: float = 1.0
    # observability (issue 8): admin listener (None: off) and the access log writer
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 10254
    access_log: bool = True
    # TLS (issue 4): the HTTPS listener; the default certificate is generated once, before workers fork
    https_port: int = 8443
    https_redirect_port: int = 0  # the port in redirects to HTTPS; 0: https_port
    fake_certificate: tuple[bytes, bytes] | None = None
    kube: KubeRunOptions | None = None  # issue 6: cluster mode (`--kubernetes`) instead of files
    redis_url: str = ""  # global rate limits (issue 5)
    shutdown_grace_period: float | None = None  # issue 7: None = the ConfigMap's shutdown-grace-period


def install_event_loop_policy() -> str:
    """uvloop when available (the data plane is tuned for it), else plain asyncio."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run(options: RunOptions) -> int:
    options = replace(options, fake_certificate=options.fake_certificate or fake_certificate(time.time()))
    if options.workers <= 1:
        return _run_worker(options, reuse_port=False)
    port = options.http_port or _pick_port(options.host)
    https_port = options.https_port or _pick_port(options.host)
    options = replace(options, http_port=port, https_port=https_port)

    # rate-limit buckets and connection counts all workers share (issue 5, policy.shared_buckets and
    # shared_connections): anonymous MAP_SHARED, inherited by every worker forked after this, restarted ones too
    shared = mmap.mmap(-1, flow.shared_size(options.workers))

    def worker(slot: int, socks: list[socket.socket], link: HealthLink, control: socket.socket | None) -> int:
        return _run_worker(options, reuse_port=True, socks=socks, slot=slot, link=link, control=control,
                           shared=shared)

    admin = None
    if options.admin_port is not None:  # issue 8: the parent serves the admin listener over all workers
        admin = admin_in_thread(options.admin_host, options.admin_port, options.compile.ingress_class)
    return supervise(options.host, [port, https_port], options.workers, worker, admin)  # issue 7


def _run_worker(options: RunOptions, *, reuse_port: bool, socks: list[socket.socket] | None = None,
                slot: int = 0, link: HealthLink | None = None, control: socket.socket | None = None,
                shared: mmap.mmap | None = None) -> int:
    loop_name = install_event_loop_policy()
    return asyncio.run(serve(options, reuse_port=reuse_port, loop_name=loop_name, socks=socks, slot=slot,
                             link=link, control=control, shared=shared))


async def serve(options: RunOptions, *, reuse_port: bool, loop_name: str = "asyncio",
                socks: list[socket.socket] | None = None, slot: int = 0, link: HealthLink | None = None,
                control: socket.socket | None = None, shared: mmap.mmap | None = None) -> int:
    """`socks`: the (http, https) listening sockets the parent holds for this worker slot (issue 7);
    `shared`: the rate-limit buckets all workers share (issue 5), mapped by the parent before the fork."""
    if options.kube is not None:  # issue 6: the API server is the source
        from pyngress.runtime.cluster import serve_cluster

        return await serve_cluster(options, reuse_port=reuse_port, loop_name=loop_name, socks=socks, slot=slot,
                                   link=link, control=control, shared=shared)
    server: ProxyServer | None = None

    def apply(snapshot: object) -> None:
        assert server is not None
        server.install(snapshot)  # type: ignore[arg-type]

    source = FileSource(list(options.paths), options.compile, apply, interval=options.poll_interval, log=log)
    snapshot = source.load_initial()
    server = ProxyServer(snapshot, probing=slot == 0)  # issue 7: one prober per group (runtime.health_link)
    join_group(server, slot, link)
    http_sock, https_sock = socks if socks is not None else (None, None)
    server.flow.configure(workers=options.workers, redis_url=options.redis_url, shared=shared,  # issue 5
                          slot=slot)
    try:
        port = await server.listen(options.host, options.http_port, reuse_port=reuse_port, sock=http_sock)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.http_port, exc.strerror or exc)
        return 2
    log.info("worker %d serving http on %s:%d (%s, config version %d, %d routes)", os.getpid(), options.host,
             port, loop_name, snapshot.version, len(snapshot.routes))
    assert options.fake_certificate is not None  # run() made it
    try:  # issue 4: the HTTPS listener
        https_port = await listen_https(server, options.host, options.https_port, reuse_port=reuse_port,
                                        contexts=TLSContexts(*options.fake_certificate),
                                        redirect_port=options.https_redirect_port, sock=https_sock)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.https_port, exc.strerror or exc)
        await server.drain(0)
        return 2
    log.info("worker %d serving https on %s:%d (%d certificates)", os.getpid(), options.host, https_port,
             len(snapshot.tls.certificates))
    observer = await observe_worker(server, source, options, control)  # issue 8: admin, access log
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, source.request_reload)
    watcher = asyncio.create_task(source.run())
    await stop.wait()
    await pre_stop(server, options.shutdown_grace_period, link)  # issue 7: readiness fails first
    log.info("draining (grace %.0fs)", options.grace)
    watcher.cancel()
    await server.drain(options.grace)
    await observer.close()
    log.info("worker %d stopped", os.getpid())
    return 0


def _pick_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def paths_of(values: Sequence[str]) -> tuple[Path, ...]:
    return tuple(Path(v) for v in values)
