"""Token buckets, connection counts and the bounded tables, with a fake clock (`now` passed in)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyngress.policy.bounded import LruTable
from pyngress.policy.limits import ConnectionLimiter, RateLimiter


def admitted(limiter: RateLimiter, client: str, now: float, n: int) -> int:
    return sum(limiter.take(client, now) == 0.0 for _ in range(n))


def test_tight_loop_gets_exactly_burst_then_refusals_saying_when_to_retry() -> None:
    limiter = RateLimiter(rate=10, burst=50)
    assert admitted(limiter, "a", 100.0, 50) == 50
    wait = limiter.take("a", 100.0)
    assert wait == pytest.approx(0.1)


def test_served_again_after_refill_one_token_per_interval() -> None:
    limiter = RateLimiter(rate=2, burst=4)
    assert admitted(limiter, "a", 0.0, 10) == 4
    assert limiter.take("a", 0.49) > 0
    assert limiter.take("a", 0.5) == 0.0
    assert limiter.take("a", 0.5) > 0
    assert admitted(limiter, "a", 100.0, 10) == 4  # refills up to burst, never beyond


def test_clients_have_separate_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert admitted(limiter, "127.0.0.2", 0.0, 5) == 2
    assert admitted(limiter, "127.0.0.3", 0.0, 5) == 2


def test_clock_going_backwards_never_adds_tokens() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("a", 10.0) == 0.0
    assert limiter.take("a", 5.0) > 0


def test_rpm_limit_refills_by_the_minute() -> None:
    limiter = RateLimiter(rate=1 / 60, burst=5)
    assert admitted(limiter, "a", 0.0, 6) == 5
    assert limiter.take("a", 59.0) > 0
    assert limiter.take("a", 60.5) == 0.0


def test_flood_of_distinct_clients_stays_within_the_table_size() -> None:
    limiter = RateLimiter(rate=1, burst=1, maximum=100)
    for i in range(10_000):
        limiter.take(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter.table) == 100
    assert limiter.table.evictions == 9_900


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=0)
    with pytest.raises(ValueError):
        ConnectionLimiter(0)


@given(st.floats(0.1, 100), st.integers(1, 50), st.lists(st.floats(0, 0.5), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, gaps: list[float]) -> None:
    limiter = RateLimiter(rate=rate, burst=burst)
    now, admitted_count = 0.0, 0
    for gap in gaps:
        now += gap
        admitted_count += limiter.take("c", now) == 0.0
    assert admitted_count <= burst + rate * now + 1e-6


def test_lru_forgets_the_least_recently_used() -> None:
    table: LruTable[str, int] = LruTable(2)
    table.put("a", 1)
    table.put("b", 2)
    assert table.used("a") == 1  # a is now the most recent
    table.put("c", 3)
    assert "b" not in table and "a" in table and "c" in table
    assert table.evictions == 1
    assert table.pop("a") == 1 and len(table) == 1
    with pytest.raises(ValueError):
        LruTable(0)


def test_connection_limit_counts_requests_in_progress_per_client() -> None:
    limiter = ConnectionLimiter(2)
    assert limiter.acquire("a") and limiter.acquire("a")
    assert not limiter.acquire("a")
    assert limiter.acquire("b")
    limiter.release("a")
    assert limiter.acquire("a")
    for _ in range(3):
        limiter.release("a")
    limiter.release("b")
    assert len(limiter) == 0  # the table only holds clients with something in progress
