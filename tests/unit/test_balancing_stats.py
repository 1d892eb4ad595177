"""EndpointStatsRegistry: in-flight counts, peak EWMA with time decay, retain across reloads, slow-start seeds."""

from __future__ import annotations

import math

import pytest

from pyngress.balancing.stats import DECAY_TIME, EndpointStats, EndpointStatsRegistry


def test_decay_time_is_ingress_nginx_ten_seconds() -> None:
    assert DECAY_TIME == 10.0


def test_started_and_finished_count_in_flight_and_requests() -> None:
    reg = EndpointStatsRegistry()
    reg.started("a:80")
    reg.started("a:80")
    reg.finished("a:80", 0.1, now=1.0)
    entry = reg.get("a:80")
    assert (entry.inflight, entry.requests) == (1, 2)


def test_in_flight_never_goes_below_zero() -> None:
    reg = EndpointStatsRegistry()
    reg.get("a:80")
    reg.finished("a:80", None, now=1.0)
    assert reg.get("a:80").inflight == 0


def test_finished_for_an_unknown_key_is_ignored_and_creates_nothing() -> None:
    reg = EndpointStatsRegistry()
    reg.finished("gone:80", 0.5, now=1.0)
    assert "gone:80" not in reg
    assert len(reg) == 0


def test_get_creates_once_and_never_replaces() -> None:
    reg = EndpointStatsRegistry()
    entry = reg.get("a:80")
    assert reg.get("a:80") is entry
    assert reg.peek("a:80") is entry
    assert reg.peek("b:80") is None
    assert not entry.measured


def test_first_sample_becomes_the_ewma() -> None:
    entry = EndpointStats()
    entry.start()
    entry.finish(0.2, now=5.0)
    assert (entry.ewma, entry.ewma_at, entry.measured) == (0.2, 5.0, True)


def test_a_slower_sample_replaces_the_ewma_at_once() -> None:
    entry = EndpointStats()
    entry.finish(0.1, now=0.0)
    entry.finish(0.9, now=0.001)
    assert entry.ewma == 0.9


def test_a_faster_sample_is_blended_by_the_time_since_the_last() -> None:
    entry = EndpointStats()
    entry.finish(1.0, now=0.0)
    entry.finish(0.0, now=DECAY_TIME)  # one decay time later: weight e^-1 on the old value
    assert entry.ewma == pytest.approx(math.exp(-1))
    entry.finish(0.1, now=DECAY_TIME)  # at the same instant a faster sample changes nothing (weight 1)
    assert entry.ewma == pytest.approx(math.exp(-1))


def test_a_failed_attempt_ends_without_a_sample() -> None:
    entry = EndpointStats()
    entry.finish(0.3, now=1.0)
    entry.start()
    entry.finish(None, now=50.0)
    assert (entry.inflight, entry.ewma, entry.ewma_at) == (0, 0.3, 1.0)


def test_decayed_is_the_ewma_aged_to_now_without_storing_it() -> None:
    entry = EndpointStats()
    entry.finish(2.0, now=100.0)
    assert entry.decayed(100.0) == 2.0
    assert entry.decayed(90.0) == 2.0  # a clock behind the sample does not inflate it
    assert entry.decayed(100.0 + 2 * DECAY_TIME) == pytest.approx(2.0 * math.exp(-2))
    assert entry.ewma == 2.0
    assert EndpointStats().decayed(1e9) == 0.0


def test_retain_drops_gone_endpoints_but_keeps_those_with_requests_in_flight() -> None:
    reg = EndpointStatsRegistry()
    for key in ("a:80", "b:80", "c:80"):
        reg.get(key)
    reg.started("c:80")
    reg.retain({"a:80"})
    assert sorted(reg) == ["a:80", "c:80"]
    busy = reg.get("c:80")
    reg.finished("c:80", 0.1, now=1.0)
    assert busy.inflight == 0
    reg.retain({"a:80"})
    assert sorted(reg) == ["a:80"]


def test_an_endpoint_removed_and_readded_while_busy_keeps_an_exact_count() -> None:
    reg = EndpointStatsRegistry()
    reg.started("a:80")
    reg.retain(set())  # reload without it
    reg.retain({"a:80"})  # and back, before its request ended
    reg.finished("a:80", 0.1, now=1.0)
    reg.started("a:80")
    assert reg.get("a:80").inflight == 1


def test_seed_gives_new_endpoints_the_average_of_the_measured() -> None:
    reg = EndpointStatsRegistry()
    reg.get("a:80").finish(0.2, now=10.0)
    reg.get("b:80").finish(0.4, now=10.0)
    assert reg.seed(["a:80", "b:80", "new:80"]) == pytest.approx(0.3)
    new = reg.get("new:80")
    assert new.ewma == pytest.approx(0.3)
    assert new.ewma_at == 10.0
    assert (reg.get("a:80").ewma, reg.get("b:80").ewma) == (0.2, 0.4)  # the measured are untouched


def test_seed_ages_the_peers_to_the_latest_sample() -> None:
    reg = EndpointStatsRegistry()
    reg.get("old:80").finish(1.0, now=0.0)
    reg.get("recent:80").finish(1.0, now=DECAY_TIME)
    seed = reg.seed(["old:80", "recent:80", "new:80"])
    assert seed == pytest.approx((math.exp(-1) + 1.0) / 2)
    assert reg.get("new:80").ewma_at == DECAY_TIME


def test_seed_with_nothing_measured_leaves_new_endpoints_at_zero() -> None:
    reg = EndpointStatsRegistry()
    assert reg.seed(["a:80", "b:80"]) is None
    assert reg.get("a:80").ewma == 0.0
    assert not reg.get("a:80").measured


def test_seed_does_not_touch_an_endpoint_measured_elsewhere() -> None:
    reg = EndpointStatsRegistry()
    reg.get("a:80").finish(0.2, now=1.0)
    reg.get("shared:80").finish(0.9, now=1.0)  # measured through another backend's balancer
    assert reg.seed(["a:80", "shared:80"]) is None
    assert reg.get("shared:80").ewma == 0.9
