"""Connection counts shared by forked workers: one count per client over all workers, each worker writing only
its own column, so a restarted worker can forget what its dead predecessor held."""

from __future__ import annotations

import mmap
import os

import pytest

from pyngress.policy.shared_connections import (
    PROBE,
    UNCOUNTED,
    SharedConnectionLimiter,
    clear_column,
    region_size,
)


def group(workers: int = 2, limit: int = 3, rows: int = 1024) -> list[SharedConnectionLimiter]:
    region = bytearray(region_size(workers, rows))
    return [SharedConnectionLimiter(region, "ns/a#1", limit, workers, w) for w in range(workers)]


def test_the_limit_holds_whichever_workers_the_requests_land_on() -> None:
    a, b = group(limit=3)
    tickets = [a.take("10.0.0.1"), b.take("10.0.0.1"), b.take("10.0.0.1")]
    assert None not in tickets
    assert a.take("10.0.0.1") is None  # 3 in progress over both workers: the 4th is refused on either
    assert b.take("10.0.0.1") is None
    assert a.active("10.0.0.1") == b.active("10.0.0.1") == 3
    assert a.take("10.0.0.2") is not None  # another client, its own count


def test_release_frees_a_slot_for_any_worker() -> None:
    a, b = group(limit=2)
    first, second = a.take("c"), a.take("c")
    assert b.take("c") is None
    b.release(first)  # tickets are positions: any worker's limiter may give one back
    third = b.take("c")
    assert third is not None
    assert a.take("c") is None
    for ticket in (second, third):
        a.release(ticket)
    assert a.active("c") == 0


def test_a_restarted_worker_forgets_only_its_own_column() -> None:
    region = bytearray(region_size(2, 64))
    a, b = (SharedConnectionLimiter(region, "k", 4, 2, w) for w in range(2))
    for _ in range(3):
        assert a.take("c") is not None  # worker 0 then dies holding three slots
    assert b.take("c") is not None
    clear_column(region, 2, 0)  # what the worker forked in its place does first
    assert b.active("c") == 1  # worker 1's request is still counted
    assert sum(b.take("c") is not None for _ in range(5)) == 3


def test_clients_colliding_on_one_worker_take_the_next_rows_then_go_uncounted() -> None:
    (only,) = group(workers=1, limit=1, rows=1)  # every client hashes to the one row: PROBE entries
    tickets = [only.take(f"10.0.0.{i}") for i in range(PROBE)]
    assert None not in tickets and UNCOUNTED not in tickets  # one entry each, none refused wrongly
    assert only.take("10.0.0.99") == UNCOUNTED  # window full: admitted, not counted (never refused wrongly)
    assert only.overflows == 1
    only.release(UNCOUNTED)  # a no-op
    assert [only.take(f"10.0.0.{i}") for i in range(PROBE)] == [None] * PROBE  # each still at its limit
    only.release(tickets[0])
    assert only.take("10.0.0.0") is not None


def test_collisions_across_workers_do_not_mix_counts() -> None:
    a, b = group(workers=2, limit=1, rows=1)
    assert a.take("x") is not None
    assert b.take("y") is not None  # same row, other column: y's count is its own
    assert a.take("y") is None and b.take("x") is None


def test_limits_with_other_identities_do_not_share() -> None:
    region = bytearray(region_size(2, 64))
    one = SharedConnectionLimiter(region, "ns/a#1", 1, 2, 0)
    other = SharedConnectionLimiter(region, "ns/b#1", 1, 2, 1)
    assert one.take("c") is not None
    assert other.take("c") is not None


def test_counts_are_shared_across_fork() -> None:
    region = mmap.mmap(-1, region_size(2, 64))  # anonymous and MAP_SHARED, as runtime.app maps it
    parent = SharedConnectionLimiter(region, "k", 3, 2, 0)
    pid = os.fork()
    if pid == 0:  # worker 1 takes two slots and keeps them
        child = SharedConnectionLimiter(region, "k", 3, 2, 1)
        os._exit(0 if child.take("c") is not None and child.take("c") is not None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.active("c") == 2
    assert parent.take("c") is not None and parent.take("c") is None
    del parent  # it holds a view of the region
    region.close()


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        SharedConnectionLimiter(bytearray(region_size(2, 8)), "x", 0, 2, 0)
    with pytest.raises(ValueError):
        SharedConnectionLimiter(bytearray(region_size(2, 8)), "x", 1, 2, 2)
    with pytest.raises(ValueError):
        SharedConnectionLimiter(bytearray(16), "x", 1, 2, 0)


class Racing(SharedConnectionLimiter):
    """A worker that another one overtakes between reading the count and writing its own."""

    __slots__ = ("other",)

    def _count(self, words: tuple[int, ...], tag: int, at: int) -> int:
        assert self.other.take("c") is not None  # the other worker takes the last slot meanwhile
        return super()._count(words, tag, at)


def test_a_worker_overtaken_at_the_last_slot_backs_off() -> None:
    region = bytearray(region_size(2, 64))
    other = SharedConnectionLimiter(region, "k", 2, 2, 1)
    racing = Racing(region, "k", 2, 2, 0)
    racing.other = other
    assert other.take("c") is not None  # one in progress; one slot left
    assert racing.take("c") is None  # it read 1, but by the time it counted the other had taken the slot
    assert other.active("c") == 2  # not 3: the limit was not exceeded, and the back-off left nothing behind
