"""Token buckets shared by forked workers: one bucket per client whichever worker takes from it."""

from __future__ import annotations

import mmap
import os

import pytest

from pyngress.policy.shared_buckets import SLOT, SharedRateLimiter


def table(slots: int = 4096) -> bytearray:
    return bytearray(slots * SLOT.size)


def admitted(limiter: SharedRateLimiter, client: str, now: float, n: int) -> int:
    return sum(limiter.take(client, now) == 0.0 for _ in range(n))


def test_exactly_burst_then_refusals_then_refill() -> None:
    limiter = SharedRateLimiter(table(), "ns/a#0", rate=2.0, burst=5)
    assert admitted(limiter, "10.0.0.1", 100.0, 8) == 5
    assert limiter.take("10.0.0.1", 100.0) == pytest.approx(0.5)
    assert limiter.take("10.0.0.1", 100.5) == 0.0
    assert admitted(limiter, "10.0.0.1", 1000.0, 8) == 5  # never more than burst


def test_two_workers_over_one_region_share_each_bucket() -> None:
    region = table()
    worker_a = SharedRateLimiter(region, "ns/a#0", rate=1.0, burst=4)
    worker_b = SharedRateLimiter(region, "ns/a#0", rate=1.0, burst=4)
    got = [limiter.take("10.0.0.1", 5.0) == 0.0 for limiter in (worker_a, worker_b) * 4]
    assert got.count(True) == 4
    assert admitted(worker_b, "10.0.0.2", 5.0, 6) == 4  # another client, its own bucket


def test_limits_with_other_identities_do_not_share() -> None:
    region = table()
    one, other = SharedRateLimiter(region, "ns/a#0", 1.0, 2), SharedRateLimiter(region, "ns/b#0", 1.0, 2)
    assert admitted(one, "c", 0.0, 3) == 2
    assert admitted(other, "c", 0.0, 3) == 2


def test_a_collision_takes_the_slot_over_with_a_full_bucket() -> None:
    limiter = SharedRateLimiter(table(slots=1), "ns/a#0", rate=1.0, burst=2)
    assert admitted(limiter, "a", 0.0, 3) == 2
    assert admitted(limiter, "b", 0.0, 3) == 2  # b took the only slot
    assert admitted(limiter, "a", 0.0, 1) == 1  # a starts over: collisions only ever admit early


def test_garbage_in_a_slot_starts_a_fresh_bucket() -> None:
    region = bytearray(os.urandom(SLOT.size * 8))
    limiter = SharedRateLimiter(region, "x", rate=1.0, burst=3)
    assert admitted(limiter, "c", 0.0, 5) == 3


def test_buckets_are_shared_across_fork() -> None:
    region = mmap.mmap(-1, 64 * SLOT.size)  # anonymous and MAP_SHARED, as runtime.app maps it
    limiter = SharedRateLimiter(region, "ns/a#0", rate=0.001, burst=5)
    pid = os.fork()
    if pid == 0:  # the child takes three tokens and leaves
        code = 0 if admitted(limiter, "c", 1.0, 3) == 3 else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert admitted(limiter, "c", 1.0, 5) == 2  # what the child took is gone for the parent too
    region.close()


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        SharedRateLimiter(table(), "x", rate=0, burst=1)
    with pytest.raises(ValueError):
        SharedRateLimiter(bytearray(10), "x", rate=1, burst=1)
