"""The local batches of a global limit, against a model of Redis's counter (fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyngress.policy.global_window import ADMIT, ASK, REFUSE, WindowBatches, default_batch


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
    verdict = batches.take(key, now)
    if verdict == ASK:
        redis.reserve(batches, key, now)
        verdict = batches.take(key, now)
    assert verdict != ASK or batches.take(key, now) != ASK
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
    assert sum(request(a, redis, b"k", 0.0) == ADMIT for _ in range(8)) == 8
    assert sum(request(b, redis, b"k", 0.0) == ADMIT for _ in range(8)) == 2  # 8 counted before: 2 left
    assert request(a, redis, b"k", 0.0) == REFUSE


@given(st.integers(1, 200), st.integers(1, 20), st.lists(st.integers(0, 3), min_size=1, max_size=400))
def test_workers_together_never_exceed_the_limit(limit: int, batch: int, who: list[int]) -> None:
    workers = [WindowBatches(limit, 60.0, batch) for _ in range(4)]
    redis = FakeRedis()
    admitted = sum(request(workers[w], redis, b"k", 1.0) == ADMIT for w in who)
    assert admitted <= limit
    if len(who) >= limit + 4 * batch:  # demand well over the limit: at most (batch - 1) per worker unused
        assert admitted >= limit - 4 * (batch - 1)


def test_default_batch_is_a_small_share_of_the_limit() -> None:
    assert [default_batch(n) for n in (1, 49, 100, 1000, 10**6)] == [1, 1, 2, 20, 100]
    with pytest.raises(ValueError):
        WindowBatches(0, 1.0)
