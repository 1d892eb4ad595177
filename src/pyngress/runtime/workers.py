"""`--workers N`: the parent process that keeps N workers alive on sockets that never close (issue 7).

The parent binds one listening socket per worker slot and port (http, https), each with SO_REUSEPORT, before
forking, and keeps all of them open for its whole life. Worker i serves on the sockets of slot i. So:

* the kernel still spreads new connections over the N sockets (one accept queue per worker, no thundering
  herd), as when each worker bound its own;
* when a worker dies (a crash, an OOM kill, kill -9), its socket stays open in the parent: connections the
  kernel queues on it meanwhile wait in its backlog instead of being reset, and the parent forks a new worker
  for that slot which serves them. The port is never closed while the parent lives.

Restarts: a worker that exits while the parent is not shutting down is forked again at once, or after one
second if it had run for less than a second (a crash loop must not spin the CPU). On SIGTERM/SIGINT the
parent forwards the signal, restarts nothing more, waits for every worker and exits 0 when all did (else
with the first non-zero code). SIGHUP is forwarded (each worker reloads).

Health checks: worker 0 probes and tells the others (see `runtime.health_link`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from pyngress.runtime.health_link import HealthLink

log = logging.getLogger("pyngress")

CRASH_LOOP_SECONDS = 1.0
# (slot, its listening sockets one per port, health link, admin control socket or None)
RunWorker = Callable[[int, list[socket.socket], HealthLink, socket.socket | None], int]
Admin = Callable[[list[socket.socket]], Callable[[], None]]  # parent's control ends -> stop


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # as asyncio's create_server: "::" is IPv6 only
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def supervise(host: str, ports: list[int], workers: int, run_worker: RunWorker, admin: Admin | None = None) -> int:
    """Run `workers` workers, each with one listening socket per port in `ports` (http, https). `admin`
    (issue 8): started with the parent's ends of one control socketpair per slot, stopped at the end."""
    sockets: list[list[socket.socket]] = [[] for _ in range(workers)]
    for port in ports:
        try:
            for slot in range(workers):
                sockets[slot].append(listening_socket(host, port))
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
            for sock in (s for slot_socks in sockets for s in slot_socks):
                sock.close()
            return 2
    pairs = HealthLink.pairs(workers)
    controls = [socket.socketpair() for _ in range(workers)] if admin is not None else []
    children: dict[int, tuple[int, float]] = {}  # pid -> (slot, start time)
    stopping = False

    def spawn(slot: int) -> None:
        link = HealthLink(pairs[slot][0], [pairs[i][1] for i in range(workers) if i != slot] if slot == 0 else [])
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = run_worker(slot, sockets[slot], link, controls[slot][1] if controls else None)
            finally:
                os._exit(code)
        children[pid] = (slot, time.monotonic())

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for slot in range(workers):
        spawn(slot)
    stop_admin = admin([ours for ours, _ in controls]) if admin is not None else None
    worst = 0
    while children:
        pid, status = os.wait()
        slot, started = children.pop(pid, (-1, 0.0))
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            if code:
                print(f"pyngress: worker {pid} exited with {code}", file=sys.stderr)
                worst = worst or (code if code > 0 else 1)
            continue
        if slot < 0:
            continue
        print(f"pyngress: worker {pid} (slot {slot}) exited with {code}: starting a new one", file=sys.stderr)
        if time.monotonic() - started < CRASH_LOOP_SECONDS:
            time.sleep(CRASH_LOOP_SECONDS)  # the parent has nothing else to do: a crash loop must not spin
        if not stopping:
            spawn(slot)
    if stop_admin is not None:
        stop_admin()
    for sock in (s for slot_socks in sockets for s in slot_socks):
        sock.close()
    for ours, theirs in controls:
        ours.close()
        theirs.close()
    for inbox, outlet in pairs:
        inbox.close()
        outlet.close()
    return worst


def admin_in_thread(host: str, port: int, ingress_class: str) -> Admin:
    """The admin listener of a `--workers N` parent (issue 8), in a thread with its own event loop: the main
    thread stays the synchronous supervisor above (it forks; a fork from a thread running an event loop
    would give the child that loop). A restarted worker answers on its slot's control socket; the admin side
    leaves out a worker that did not answer (see observability.workers)."""

    def start(controls: list[socket.socket]) -> Callable[[], None]:
        from pyngress.observability.admin import AdminApp, AdminServer
        from pyngress.observability.workers import WorkersProvider

        loop = asyncio.new_event_loop()
        stopping = asyncio.Event()

        async def serve() -> None:
            provider = WorkersProvider(controls)
            await provider.start()
            admin = AdminServer(AdminApp(provider, ingress_class))
            try:
                bound = await admin.start(host, port)
                shown = f"[{host}]" if ":" in host else host
                log.info("admin listener on http://%s:%d (dashboard /, metrics /metrics)", shown, bound)
            except OSError as exc:
                log.error("cannot listen for admin on %s:%d: %s", host, port, exc.strerror or exc)
            await stopping.wait()
            await admin.close()
            provider.close()

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True,
                                  name="pyngress-admin")
        thread.start()

        def stop() -> None:
            loop.call_soon_threadsafe(stopping.set)
            thread.join(10)
            if not thread.is_alive():
                loop.close()

        return stop

    return start
