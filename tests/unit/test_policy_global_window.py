"""The local batches of a global limit, against a model of Redis's counter (fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyngress.policy.global_window import ADMIT, ASK, PREFETCH, REFUSE, WindowBatches, default_batch


class FakeRedis:
    def __init__(self) -> None:
        self.counts: dict[tuple[bytes, int], int] = {}
        self.trips = 0

    def reserve(self, batches: WindowBatches, key: bytes, now: float) -> None:
        window = batches.window_of(now)
        self.trips += 1
        total = self.counts[(key, window)] = self.counts.get((key, window), 0) + batches.batch
        batches.granted(key, window, total, batches.batch)


def request(batches: WindowBatches, redis: FakeRedis, key: bytes, now: float) -> int:
    """One request; a prefetch is answered at once (the background reservation of the runtime)."""
    verdict = batches.take(key, now)
    if verdict == ASK:
        redis.reserve(batches, key, now)
        verdict = batches.take(key, now)
    if verdict == PREFETCH:
        redis.reserve(batches, key, now)
        verdict = ADMIT
    assert verdict != ASK
    return verdict


def test_one_worker_admits_exactly_the_limit_and_asks_once_per_batch() -> None:
    batches, redis = WindowBatches(limit=100, window=60.0, batch=10), FakeRedis()
    verdicts = [request(batches, redis, b"c", 5.0) for _ in range(150)]
    assert verdicts.count(ADMIT) == 100 and verdicts.count(REFUSE) == 50
    assert redis.trips == 11  # 10 full batches, then one that finds the window used up
    assert batches.retry_after(5.0) == pytest.approx(55.0)


def test_next_window_starts_again() -> None:
    batches, redis = WindowBatches(limit=3, window=10.0, batch=1), FakeRedis()
    assert [request(batches, redis, b"c", 1.0) for _ in range(4)] == [ADMIT, ADMIT, ADMIT, REFUSE]
    assert request(batches, redis, b"c", 10.0) == ADMIT


def test_partial_grant_when_another_worker_took_most_of_the_window() -> None:
    a, b, redis = WindowBatches(10, 60.0, 4), WindowBatches(10, 60.0, 4), FakeRedis()
    assert [request(a, redis, b"k", 0.0) for _ in range(4)] == [ADMIT] * 4  # a reserved 4, then 4 more
    assert sum(request(b, redis, b"k", 0.0) == ADMIT for _ in range(8)) == 2  # 8 counted before b: 2 left
    assert sum(request(a, redis, b"k", 0.0) == ADMIT for _ in range(8)) == 4  # what a holds, then no more
    assert redis.counts[(b"k", 0)] >= 10


@given(st.integers(1, 200), st.integers(1, 20), st.lists(st.integers(0, 3), min_size=1, max_size=400))
def test_workers_together_never_exceed_the_limit(limit: int, batch: int, who: list[int]) -> None:
    workers = [WindowBatches(limit, 60.0, batch) for _ in range(4)]
    redis = FakeRedis()
    admitted = sum(request(workers[w], redis, b"k", 1.0) == ADMIT for w in who)
    assert admitted <= limit
    if len(who) >= limit + 8 * batch:  # demand well over the limit: a batch and a quarter per worker unused
        assert admitted >= limit - 4 * (batch + batch // 4)


def test_next_batch_is_asked_for_when_a_quarter_is_left() -> None:
    batches, redis = WindowBatches(limit=1000, window=60.0, batch=8), FakeRedis()
    assert batches.take(b"k", 0.0) == ASK
    redis.reserve(batches, b"k", 0.0)
    verdicts = [batches.take(b"k", 0.0) for _ in range(8)]
    assert verdicts == [ADMIT] * 5 + [PREFETCH] + [ADMIT] * 2  # 8 - 6 = 2 = low_water left
    assert batches.take(b"k", 0.0) == ASK  # the prefetch did not happen: this request must wait


def test_no_prefetch_once_redis_said_the_window_is_used_up() -> None:
    batches, redis = WindowBatches(limit=6, window=60.0, batch=4), FakeRedis()
    assert [request(batches, redis, b"k", 0.0) for _ in range(8)] == [ADMIT] * 6 + [REFUSE] * 2
    assert redis.trips == 2


def test_default_batch_is_a_small_share_of_the_limit() -> None:
    assert [default_batch(n) for n in (1, 49, 100, 1000, 10**6)] == [1, 1, 2, 20, 100]
    with pytest.raises(ValueError):
        WindowBatches(0, 1.0)


def test_a_busy_key_gets_bigger_batches_up_to_two_percent_of_the_limit_and_an_idle_one_smaller() -> None:
    batches = WindowBatches(limit=100_000, window=3600.0)  # no configured batch: the default, 2 % of the limit
    assert batches.batch == 100 and batches.max_batch == 2000
    counted = 0
    sizes = []

    def reserve(now: float) -> None:
        nonlocal counted
        asked = batches.batch_for(b"k")
        sizes.append(asked)
        counted += asked
        batches.granted(b"k", batches.window_of(now), counted, asked, now)

    clock = 0.0
    for _ in range(30_000):  # 10,000 requests a second: each batch is used up well within GROW_SECONDS
        clock += 0.0001
        verdict = batches.take(b"k", clock)
        if verdict in (ASK, PREFETCH):
            reserve(clock)
            if verdict == ASK:
                assert batches.take(b"k", clock) in (ADMIT, PREFETCH)
    assert sizes[:6] == [100, 100, 200, 400, 800, 1600]  # doubling from the second grant
    assert max(sizes) == 2000  # capped
    assert len(sizes) < 30_000 / 1000  # a handful of round trips instead of 300
    reserve(clock + 10.0)  # then a quiet spell: the next batch halves
    assert batches.batch_for(b"k") == 1000
    assert counted <= 100_000  # never more reserved than the limit


def test_a_configured_batch_stays_fixed() -> None:
    batches = WindowBatches(limit=100_000, window=60.0, batch=10)
    for i in range(5):
        batches.granted(b"k", 0, 10 * (i + 1), batches.batch_for(b"k"), 0.001 * i)
    assert batches.batch_for(b"k") == 10
