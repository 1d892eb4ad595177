"""Helpers for the tests that drive pyngress (or redis-server) as a child process: a free port to give it, a
bounded wait for something it should do, the worker processes it forked."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on right now (for a child process to bind)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition",
             state: Callable[[], object] = lambda: "",
             retry_on: tuple[type[Exception], ...] = ()) -> None:
    """Poll `condition` until it is true; fail after `timeout` seconds, naming `what` and `state()`. Exceptions
    of the `retry_on` types (OSError, while a child is still starting to listen) count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except retry_on:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what} {state()}".rstrip()
        time.sleep(0.02)  # polling interval of a bounded wait, not synchronisation by sleeping


def children(pid: int) -> set[int]:
    """The processes `pid` forked (its workers)."""
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
