"""kill -9 a pod's server (a subprocess) under load: what fails, how fast it is ejected, how it comes back."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from dataclasses import replace

from harness import async_test, route, running_proxy, service, snapshot, wait_until
from processes import free_port
from test_health_load import CLIENTS, Load

from pyngress.model import ActiveCheck, Endpoint, HealthSpec
from pyngress.runtime.echo import start_echo

POD = """
import asyncio, sys
from pyngress.runtime.echo import start_echo
async def main():
    await start_echo("victim", port=int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def start_pod(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", POD, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
    assert line.strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


@async_test
async def test_kill_9_under_load_ejects_within_a_second_and_active_check_brings_it_back() -> None:
    port = free_port()
    victim = await start_pod(port)
    async with contextlib.AsyncExitStack() as exits:
        exits.callback(lambda: stop(victim))
        pods = [await start_echo(f"pod-{i}") for i in range(2)]
        exits.push_async_callback(lambda: asyncio.gather(*(p.close() for p in pods)))
        key = Endpoint("127.0.0.1", port).key
        check = ActiveCheck(path="/", interval=0.5, timeout=0.5, healthy_threshold=2, unhealthy_threshold=2)
        endpoints = [Endpoint("127.0.0.1", p.port) for p in pods] + [Endpoint("127.0.0.1", port)]
        svc = replace(service("web", endpoints), health=HealthSpec(active=check))
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(svc)])))
        health, load, loop = proxy.server.health, Load(), asyncio.get_running_loop()
        clients = [asyncio.create_task(load.client(proxy.port)) for _ in range(CLIENTS)]
        try:
            await wait_until(lambda: health.record(key).attempts > 100, what="the victim serves")
            victim.kill()
            killed = loop.time()
            await wait_until(lambda: health.detector.records[key].ejected, timeout=1.0, what="passive ejection")
            ejected_after = loop.time() - killed
            served_at_kill = sum(load.statuses.values())
            await wait_until(lambda: key in health.active_down, timeout=5, what="active check fails")
            assert sum(load.statuses.values()) > served_at_kill + 100  # traffic went on
            failed_at_kill = load.failed
            victim.wait(10)
            stop(victim)
            victim = await start_pod(port)  # the pod restarts on the same address
            back_from = loop.time()
            await wait_until(lambda: key not in health.down, timeout=10, what="back after restart")
            back_after = loop.time() - back_from
            attempts = health.record(key).attempts
            await wait_until(lambda: health.record(key).attempts > attempts + 50, what="traffic again")
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
        print(f"kill -9: ejected {ejected_after * 1000:.0f} ms after the kill, {failed_at_kill} requests failed "
              f"({health.retries} retried), back {back_after:.2f}s after the restart, "
              f"{sum(load.statuses.values())} requests in all")
        assert load.failed <= CLIENTS  # at most the requests in flight on the victim when it died
