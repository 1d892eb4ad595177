"""Passive ejection, max ejection percent, panic mode and active checks, in process, on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from harness import RawClient, async_test, route, running_proxy, service, snapshot, wait_until
from health_pods import HealthPod, checked

from pyngress.model import HealthSpec, ProxySettings


async def pods(exits: contextlib.AsyncExitStack, n: int) -> list[HealthPod]:
    made = []
    for i in range(n):
        pod = await HealthPod.start(f"pod-{i}")
        exits.push_async_callback(pod.close)
        made.append(pod)
    return made


async def gets(client: RawClient, n: int) -> list[int]:
    return [(await client.request("GET", f"/r/{i}")).status for i in range(n)]


@async_test
async def test_five_consecutive_5xx_eject_the_pod_and_traffic_goes_to_the_others() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b, c = await pods(exits, 3)
        svc = service("web", [a, b, c])
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(svc)])))
        b.status = 500
        async with await proxy.client() as client:
            statuses = await gets(client, 30)
            health = proxy.server.health
            assert health.detector.records[b.endpoint.key].ejected
            assert len(b.served) == 5  # exactly the five failures, then out of rotation
            assert statuses.count(500) == 5
            before = len(b.served)
            assert set(await gets(client, 20)) == {200}
            assert len(b.served) == before


@async_test
async def test_never_more_than_half_of_a_service_is_ejected() -> None:
    async with contextlib.AsyncExitStack() as exits:
        all_pods = await pods(exits, 4)
        svc = service("web", all_pods)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(svc)])))
        for pod in all_pods[:3]:
            pod.status = 503
        async with await proxy.client() as client:
            await gets(client, 80)
        ejected = proxy.server.health.detector.ejected
        assert len(ejected) == 2  # max-ejection-percent 50 of 4
        assert ejected <= {p.endpoint.key for p in all_pods[:3]}


@async_test
async def test_max_ejection_percent_setting() -> None:
    async with contextlib.AsyncExitStack() as exits:
        all_pods = await pods(exits, 4)
        for pod in all_pods:
            pod.status = 500
        svc = service("web", all_pods)
        settings = ProxySettings(max_ejection_percent=25)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(svc)], settings=settings)))
        async with await proxy.client() as client:
            await gets(client, 60)
        assert len(proxy.server.health.detector.ejected) == 1


@async_test
async def test_active_check_takes_a_pod_answering_500_on_its_health_path_out_and_brings_it_back() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b, c = await pods(exits, 3)
        svc = checked(service("web", [a, b, c]), interval=0.05)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(svc)])))
        health = proxy.server.health
        b.health_status = 500
        await wait_until(lambda: b.endpoint.key in health.down, what="b taken out")
        async with await proxy.client() as client:
            before = len(b.served)
            assert set(await gets(client, 30)) == {200}
            assert len(b.served) == before  # out of rotation
            b.health_status = 200
            await wait_until(lambda: b.endpoint.key not in health.down, what="b back")
            await gets(client, 30)
            assert len(b.served) >= before + 9  # a third of 30, give or take the rotation's phase
        assert b.probes >= 4  # 2 failures out, 2 passes back


@async_test
async def test_panic_mode_balances_over_all_when_every_pod_fails_its_check() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        svc = checked(service("web", [a, b]), interval=0.05)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(svc)])))
        health = proxy.server.health
        a.health_status = b.health_status = 500
        await wait_until(lambda: len(health.down) == 2 and health.panic == {svc.key}, what="both down: panic")
        async with await proxy.client() as client:
            assert set(await gets(client, 20)) == {200}  # not 503: both still serve
        assert len(a.served) == 10 and len(b.served) == 10
        a.health_status = 200
        # panic is decided when the balancer is rebuilt, on the loop's next turn after `down` changes
        await wait_until(lambda: a.endpoint.key not in health.down and not health.panic, what="a back, no panic")
        async with await proxy.client() as client:
            await gets(client, 10)
        assert len(a.served) == 20 and len(b.served) == 10  # only the healthy one now


@async_test
async def test_a_reload_neither_restarts_probes_nor_forgets_their_state() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        svc = checked(service("web", [a, b]), interval=0.05)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(svc)])))
        server = proxy.server
        b.health_status = 500
        await wait_until(lambda: b.endpoint.key in server.health.down, what="b down")
        prober = server.prober
        assert prober is not None
        tasks = dict(prober._tasks)
        for version in range(2, 30):  # an unrelated route comes and goes: same endpoints
            extra = [route(service("other", [a]), "/other")] if version % 2 else []
            server.install(snapshot([route(svc), *extra], version=version))
        assert prober._tasks == tasks  # the same tasks: no probe restarted, no burst
        assert b.endpoint.key in server.health.down
        probes, loop = a.probes, asyncio.get_running_loop()
        started = loop.time()
        await wait_until(lambda: a.probes >= probes + 5, what="probing goes on")
        assert loop.time() - started >= 4 * 0.05 * 0.85  # at the schedule's pace, not in a burst


@async_test
async def test_slow_start_ramps_a_new_pod_in() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b, new = await pods(exits, 3)
        old = replace(service("web", [a, b]), health=HealthSpec(slow_start=2.0))
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(old)])))
        grown = replace(old, endpoints=(a.endpoint, b.endpoint, new.endpoint))
        proxy.server.install(snapshot([route(grown)], version=2))
        health = proxy.server.health
        assert {e.name: e.weight for e in health.endpoints_for(grown)} == {"pod-0": 10, "pod-1": 10, "pod-2": 1}
        async with await proxy.client() as client:
            await gets(client, 105)
            assert len(new.served) <= 21  # at most half its weight within the first second (full share: 35)
            await wait_until(lambda: health.now - health.entered[new.endpoint.key] > 3.0, what="ramp over")
            before = len(new.served)
            await gets(client, 90)
            assert len(new.served) - before == 30  # a full third once the window is over


@async_test
async def test_describe_reports_ejections_for_observability() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b, c = await pods(exits, 3)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("web", [a, b, c]))])))
        b.status = 500
        async with await proxy.client() as client:
            await gets(client, 30)
        state = proxy.server.health.describe()
        assert state[b.endpoint.key]["times_ejected"] == 1
        assert 25.0 <= float(state[b.endpoint.key]["ejected_for"]) <= 30.0  # type: ignore[arg-type]
        assert state[a.endpoint.key]["ejected_for"] == 0.0 and state[a.endpoint.key]["active_healthy"]


@async_test
async def test_an_ejected_pod_shows_in_the_status_and_metrics_state() -> None:
    """What /status, /metrics and the dashboard read (observability.export.worker_state)."""
    from pyngress.observability.export import worker_state

    async with contextlib.AsyncExitStack() as exits:
        a, b, c = await pods(exits, 3)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("web", [a, b, c]))])))
        b.status = 500
        async with await proxy.client() as client:
            await gets(client, 30)
        endpoints = worker_state(proxy.server)["endpoints"]
        assert endpoints[b.endpoint.key]["ejected"] is True
        assert endpoints[b.endpoint.key]["ejections"] == 1
        assert endpoints[a.endpoint.key]["ejected"] is False
        assert endpoints[a.endpoint.key]["health"] == "ready"  # no active check configured
        assert endpoints[a.endpoint.key]["health_source"] == "health checks"
