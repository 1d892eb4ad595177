"""Passive outlier ejection, active check thresholds, retry budget, selection: pure, with a fake clock."""

from __future__ import annotations

import random

from pyngress.balancing import PickContext
from pyngress.balancing.affinity import ClientIPAffinity, CookieAffinity
from pyngress.balancing.weighted import SmoothWeightedRoundRobin
from pyngress.health.active import CheckState, first_delay, next_delay
from pyngress.health.budget import RetryBudget
from pyngress.health.outlier import OutlierDetector, OutlierPolicy
from pyngress.health.selection import SCALE, effective, ramp_fraction
from pyngress.model import ActiveCheck, Endpoint


def detector(n: int = 4, **policy: float) -> OutlierDetector:
    d = OutlierDetector(OutlierPolicy(**policy))  # type: ignore[arg-type]
    d.set_groups({"svc": [f"e{i}" for i in range(n)]})
    return d


def fail(d: OutlierDetector, key: str, times: int, now: float) -> bool:
    return any([d.failure(d.record(key), now) for _ in range(times)])


def test_five_consecutive_failures_eject_for_thirty_seconds() -> None:
    d = detector()
    assert not fail(d, "e0", 4, now=0.0)
    assert d.failure(d.record("e0"), 0.0)
    assert d.ejected == {"e0"}
    assert d.sweep(29.9) == [] and d.ejected == {"e0"}
    assert d.sweep(30.0) == ["e0"] and d.ejected == frozenset()


def test_a_success_resets_the_count() -> None:
    d = detector()
    fail(d, "e0", 4, 0.0)
    d.success(d.record("e0"))
    assert not fail(d, "e0", 4, 0.0)


def test_ejection_time_grows_with_times_ejected_up_to_the_maximum() -> None:
    d = detector(base_time=30.0, max_time=300.0)
    now, durations = 0.0, []
    for _ in range(12):
        fail(d, "e0", 5, now)  # on probation after the first: one failure re-ejects, but 5 are harmless
        until = d.record("e0").ejected_until
        durations.append(until - now)
        now = until
        assert d.sweep(now) == ["e0"]
    assert durations[:4] == [30.0, 60.0, 90.0, 120.0]
    assert durations[-1] == 300.0


def test_probation_one_failure_ejects_again_one_success_ends_it() -> None:
    d = detector()
    fail(d, "e0", 5, 0.0)
    d.sweep(30.0)
    assert d.failure(d.record("e0"), 31.0)  # on probation: one failure is enough
    assert d.record("e0").ejected_until == 31.0 + 60.0
    d.sweep(91.0)
    d.success(d.record("e0"))
    assert not fail(d, "e0", 4, 92.0)


def test_multiplier_decays_while_the_endpoint_stays_in_rotation() -> None:
    d = detector(base_time=30.0)
    fail(d, "e0", 5, 0.0)
    d.sweep(30.0)
    d.success(d.record("e0"))
    assert d.record("e0").times_ejected == 1
    d.sweep(60.0)
    assert d.record("e0").times_ejected == 0


def test_never_more_than_max_percent_ejected() -> None:
    d = detector(n=5, max_percent=50)
    for key in ("e0", "e1", "e2", "e3"):
        fail(d, key, 5, 0.0)
    assert d.ejected == {"e0", "e1"}  # floor(5 * 50 %) = 2


def test_a_lone_endpoint_is_never_ejected() -> None:
    d = detector(n=1)
    assert not fail(d, "e0", 50, 0.0)


def test_membership_in_two_backends_counts_against_both() -> None:
    d = OutlierDetector(OutlierPolicy())
    d.set_groups({"a": ["x", "y"], "b": ["x", "y", "z", "w"]})
    fail(d, "y", 5, 0.0)  # a: 1 of 2 = 50 %
    assert d.ejected == {"y"}
    assert not fail(d, "x", 5, 0.0)  # would make a 100 %


def test_active_pass_unejects() -> None:
    d = detector()
    fail(d, "e0", 5, 0.0)
    assert d.uneject("e0", 3.0)
    assert d.ejected == frozenset() and d.record("e0").probation


def test_zero_consecutive_switches_ejection_off() -> None:
    d = detector(consecutive=0)
    assert not fail(d, "e0", 100, 0.0)


def test_records_of_removed_endpoints_are_dropped() -> None:
    d = detector()
    fail(d, "e0", 5, 0.0)
    d.set_groups({"svc": ["e1"]})
    assert "e0" not in d.records


# -- active checks --------------------------------------------------------------------------------------------


def test_active_thresholds() -> None:
    check = ActiveCheck(healthy_threshold=2, unhealthy_threshold=3)
    s = CheckState()
    assert s.healthy
    assert [s.observe(False, check) for _ in range(3)] == [False, False, True]
    assert not s.healthy
    assert not s.observe(True, check)
    assert not s.observe(False, check)  # a failure resets the passes
    assert [s.observe(True, check) for _ in range(2)] == [False, True]
    assert s.healthy


def test_probe_schedule_is_jittered_and_spread() -> None:
    check = ActiveCheck(interval=5.0)
    rng = random.Random(1)
    firsts = [first_delay(check, rng) for _ in range(200)]
    assert 0 <= min(firsts) < 0.5 and 4.5 < max(firsts) <= 5.0
    nexts = [next_delay(check, rng) for _ in range(200)]
    assert all(4.25 <= d <= 5.75 for d in nexts) and len(set(nexts)) == 200


def test_expected_status_ranges() -> None:
    check = ActiveCheck(expected=((200, 299), (404, 404)))
    assert check.passes(204) and check.passes(404) and not check.passes(302) and not check.passes(500)


# -- retry budget ---------------------------------------------------------------------------------------------


def test_budget_allows_twenty_percent_of_first_attempts() -> None:
    b = RetryBudget(percent=20, window=10, min_retries=3)
    b.sample(0.0, 0)
    attempts, allowed = 0, 0
    for i in range(1000):  # every request fails and wants a retry
        now = i * 0.005  # 5 s
        attempts += 1
        if b.allow(now, attempts):
            attempts += 1
            allowed += 1
    assert 190 <= allowed <= 203  # 20 % of the 1000 first attempts (+ the floor of 3)


def test_budget_floor_lets_a_quiet_service_retry() -> None:
    b = RetryBudget(percent=20, window=10, min_retries=3)
    b.sample(0.0, 0)
    assert [b.allow(1.0, 1) for _ in range(4)] == [True, True, True, False]


def test_budget_window_slides() -> None:
    b = RetryBudget(percent=20, window=10, min_retries=1)
    b.sample(0.0, 0)
    assert b.allow(1.0, 1) and not b.allow(1.0, 1)
    for t in range(1, 13):
        b.sample(float(t), 1)
    assert b.allow(12.0, 1)  # the old retry left the window


def test_budget_off() -> None:
    b = RetryBudget(percent=0)
    assert all(b.allow(0.0, 0) for _ in range(100))


# -- selection: panic, terminating, slow start ----------------------------------------------------------------


def eps(*names: str, terminating: tuple[str, ...] = ()) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i}", 80, name=n, terminating=n in terminating) for i, n in enumerate(names, 1)]


def test_down_endpoints_leave_rotation() -> None:
    e = eps("a", "b", "c")
    chosen, panic = effective(e, {e[1].key})
    assert [x.name for x in chosen] == ["a", "c"] and not panic


def test_panic_mode_when_every_endpoint_is_down() -> None:
    e = eps("a", "b")
    chosen, panic = effective(e, {e[0].key, e[1].key})
    assert [x.name for x in chosen] == ["a", "b"] and panic


def test_terminating_endpoints_serve_only_when_none_is_ready() -> None:
    e = eps("a", "t", terminating=("t",))
    chosen, _ = effective(e, set())
    assert [(x.name, x.weight) for x in chosen] == [("a", 1), ("t", 0)]
    chosen, _ = effective(e[1:], set())
    assert [(x.name, x.weight) for x in chosen] == [("t", 1)]


def test_slow_start_ramps_weights() -> None:
    e = eps("a", "b")
    chosen, _ = effective(e, set(), {e[1].key: 0.25})
    assert [x.weight for x in chosen] == [SCALE, round(SCALE * 0.25)]
    assert ramp_fraction(10.0, 15.0, 20.0) == 0.25 and ramp_fraction(10.0, 40.0, 20.0) == 1.0


def test_balancer_share_follows_the_ramp() -> None:
    e = eps("a", "b")
    rr = SmoothWeightedRoundRobin(e, random.Random(0))
    rr.update(effective(e, set(), {e[1].key: 0.1})[0])
    picks = [rr.pick(PickContext()) for _ in range(110)]
    assert sum(1 for p in picks if p is not None and p.name == "b") == 10


def test_terminating_keeps_its_cookie_users_but_gets_no_new_ones() -> None:
    e = eps("a", "t")
    inner = SmoothWeightedRoundRobin(e, random.Random(0))
    aff = CookieAffinity(inner, e, salt=b"s")
    token = aff.token(e[1], None)
    assert token is not None
    terminating = [e[0], Endpoint(e[1].address, 80, name="t", terminating=True)]
    aff.update(effective(terminating, set())[0])
    kept = aff.pick(PickContext(affinity=token))
    assert kept is not None and kept.name == "t"
    assert aff.token(kept, token) is None  # the cookie stays as it is
    assert {p.name for p in (aff.pick(PickContext()) for _ in range(20)) if p is not None} == {"a"}


def test_terminating_keeps_its_client_ip_users() -> None:
    e = eps("a", "t")
    aff = ClientIPAffinity(SmoothWeightedRoundRobin(e, random.Random(0)), e, timeout=100.0)
    owners = {ip: aff.pick(PickContext(ip, now=0.0)) for ip in (f"192.0.2.{i}" for i in range(40))}
    on_t = [ip for ip, p in owners.items() if p is not None and p.name == "t"]
    assert on_t
    terminating = [e[0], Endpoint(e[1].address, 80, name="t", terminating=True)]
    aff.update(effective(terminating, set())[0])
    for ip in on_t:
        kept = aff.pick(PickContext(ip, now=1.0))
        assert kept is not None and kept.name == "t"
    fresh = aff.pick(PickContext("198.51.100.7", now=1.0))
    assert fresh is not None and fresh.name == "a"
