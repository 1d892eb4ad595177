"""`pyngress run`: workers, signals and the file source around a ProxyServer.

With `--workers 1` the proxy runs in this process. With N > 1 the parent forks N workers before any event
loop exists; each binds its own listening socket with SO_REUSEPORT, so the kernel spreads connections over
them, and each reads and watches the configuration itself (a reload is at most one poll interval apart between
workers). The parent only forwards SIGTERM/SIGINT/SIGHUP and reports how workers ended.

Signals in a worker: SIGHUP reloads now; SIGTERM and SIGINT drain (stop accepting, finish in-flight requests
within the grace period) and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pyngress.config import CompileOptions
from pyngress.observability.wiring import observe_worker, supervise_with_admin
from pyngress.policy import shared_buckets
from pyngress.runtime.https_listener import listen_https
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.tls_contexts import TLSContexts, fake_certificate
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
    return _supervise(RunOptions(**{**options.__dict__, "http_port": port, "https_port": https_port}))


def _run_worker(options: RunOptions, *, reuse_port: bool, control: socket.socket | None = None,
                shared: mmap.mmap | None = None) -> int:
    loop_name = install_event_loop_policy()
    return asyncio.run(serve(options, reuse_port=reuse_port, loop_name=loop_name, control=control, shared=shared))


async def serve(options: RunOptions, *, reuse_port: bool, loop_name: str = "asyncio",
                control: socket.socket | None = None, shared: mmap.mmap | None = None) -> int:
    if options.kube is not None:  # issue 6: the API server is the source
        from pyngress.runtime.cluster import serve_cluster

        return await serve_cluster(options, reuse_port=reuse_port, loop_name=loop_name, control=control,
                                   shared=shared)
    server: ProxyServer | None = None

    def apply(snapshot: object) -> None:
        assert server is not None
        server.install(snapshot)  # type: ignore[arg-type]

    source = FileSource(list(options.paths), options.compile, apply, interval=options.poll_interval, log=log)
    snapshot = source.load_initial()
    server = ProxyServer(snapshot)
    server.flow.configure(workers=options.workers, redis_url=options.redis_url, shared=shared)  # issue 5
    try:
        port = await server.listen(options.host, options.http_port, reuse_port=reuse_port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.http_port, exc.strerror or exc)
        return 2
    log.info("worker %d serving http on %s:%d (%s, config version %d, %d routes)", os.getpid(), options.host,
             port, loop_name, snapshot.version, len(snapshot.routes))
    assert options.fake_certificate is not None  # run() made it
    try:  # issue 4: the HTTPS listener
        https_port = await listen_https(server, options.host, options.https_port, reuse_port=reuse_port,
                                        contexts=TLSContexts(*options.fake_certificate),
                                        redirect_port=options.https_redirect_port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.https_port, exc.strerror or exc)
        await server.drain(0)
        return 2
    log.info("worker %d serving https on %s:%d (%d certificates)", os.getpid(), options.host, https_port,
             len(snapshot.tls.certificates))
    observer = await observe_worker(server, source, options, control)  # issue 8: admin, access log
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, source.request_reload)
    watcher = asyncio.create_task(source.run())
    await stop.wait()
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


def _supervise(options: RunOptions) -> int:
    children: list[int] = []
    # rate-limit buckets all workers share (issue 5, policy.shared_buckets): anonymous MAP_SHARED, inherited
    shared = mmap.mmap(-1, shared_buckets.DEFAULT_SLOTS * shared_buckets.SLOT.size)
    # issue 8: with the admin listener on, the parent asks every worker for its metrics over a socketpair
    pipes = [socket.socketpair() for _ in range(options.workers)] if options.admin_port is not None else []
    for i in range(options.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for j, (ours, theirs) in enumerate(pipes):
                    ours.close()
                    if j != i:
                        theirs.close()
                code = _run_worker(options, reuse_port=True, control=pipes[i][1] if pipes else None,
                                   shared=shared)
            finally:
                os._exit(code)
        children.append(pid)
    for _, theirs in pipes:
        theirs.close()
    if pipes:
        return supervise_with_admin(children, [ours for ours, _ in pipes], options, _wait_child)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    worst = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code:
            print(f"pyngress: worker {pid} exited with {code}", file=sys.stderr)
            worst = worst or (code if code > 0 else 1)
    return worst


def _wait_child(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"pyngress: worker {pid} exited with {code}", file=sys.stderr)
    return code


def paths_of(values: Sequence[str]) -> tuple[Path, ...]:
    return tuple(Path(v) for v in values)
