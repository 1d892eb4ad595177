"""Shared test support, kept small: `async def` tests run on a fresh event loop, and fail if they leak tasks.

No plugin is needed (pytest-asyncio is not a dependency). A test that wants both asyncio and uvloop uses
`tests/integration/harness.async_test` instead; that wrapper is a plain function, so this hook leaves it alone.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable

import pytest
from hypothesis import settings

# Property tests judge correctness, not speed: on a loaded 2-core machine (CI, or several suites at once) an
# example can take longer than Hypothesis's 200 ms default deadline, which would fail a correct test.
settings.register_profile("pyngress", deadline=None)
settings.load_profile("pyngress")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = inspect.signature(pyfuncitem.obj).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    with asyncio.Runner() as runner:
        runner.run(_without_leaks(pyfuncitem.obj(**kwargs)))
    return True


async def _without_leaks(test: Awaitable[None]) -> None:
    await test
    for _ in range(3):  # let callbacks scheduled by the test's last statements (connection_lost...) run
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks left running: {leaked}"
