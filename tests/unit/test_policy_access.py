"""Access lists: deny before allow, v4 and v6, user agents and referers as nginx map entries."""

from __future__ import annotations

import pytest

from pyngress.model.flow import FlowSpec, GlobalLimitSpec, RateSpec
from pyngress.policy.access import AccessList, TextMatcher, check_pattern
from pyngress.policy.cidr import address_int
from pyngress.policy.flow import RoutePolicy


def ip(text: str) -> int | None:
    return address_int(text)


def test_allowlist_admits_only_its_networks() -> None:
    access = AccessList(allow=["10.0.0.0/8", "::1"])
    assert access.permits(ip("10.1.1.1")) and access.permits(ip("::1"))
    assert not access.permits(ip("127.0.0.1")) and not access.permits(ip("::2"))
    assert not access.permits(None)  # an address we cannot read is not on the list


def test_deny_wins_over_allow() -> None:
    access = AccessList(allow=["10.0.0.0/8"], deny=["10.6.0.0/16"])
    assert access.permits(ip("10.1.0.1"))
    assert not access.permits(ip("10.6.0.1"))


def test_denylist_alone_admits_everyone_else() -> None:
    access = AccessList(deny=["::1", "127.0.0.2"])
    assert access.permits(ip("127.0.0.1"))
    assert not access.permits(ip("::1")) and not access.permits(ip("127.0.0.2"))
    assert access.permits(None)


def test_user_agents_exact_ignores_case_regex_as_written() -> None:
    matcher = TextMatcher(["BadBot/1.0", "~^curl/", "~*python-requests"])
    assert matcher.matches(b"badbot/1.0")
    assert not matcher.matches(b"BadBot/1.0 extra")
    assert matcher.matches(b"curl/8.0") and not matcher.matches(b"Curl/8.0")
    assert matcher.matches(b"Python-Requests/2.31")
    assert not matcher.matches(None) and not matcher.matches(b"Mozilla/5.0")


def test_blocked_agent_or_referer_is_refused() -> None:
    access = AccessList(agents=["~*bot"], referers=["~spam\\.example"])
    assert access.reads_headers
    assert not access.permits(ip("1.2.3.4"), b"SomeBot", None)
    assert not access.permits(ip("1.2.3.4"), b"Mozilla", b"https://spam.example/x")
    assert access.permits(ip("1.2.3.4"), b"Mozilla", b"https://ok.example/")


def test_bad_regex_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        check_pattern("~*(unclosed")
    assert check_pattern("plain(") == "plain("


def test_route_policy_divides_limits_over_workers() -> None:
    spec = FlowSpec("ns/ing", rates=(RateSpec(10.0, 50, "10 r/s"),), connections=3)
    one, four = RoutePolicy(spec), RoutePolicy(spec, workers=4)
    assert (one.rates[0].rate, one.rates[0].burst) == (10.0, 50)
    assert (four.rates[0].rate, four.rates[0].burst) == (2.5, 13)  # ceil(50 / 4)
    assert four.connections is not None and four.connections.limit == 1


def test_route_policy_takes_from_every_rate_and_reports_the_wait() -> None:
    spec = FlowSpec("ns/ing", rates=(RateSpec(10.0, 50, "10 r/s"), RateSpec(1 / 60, 2, "1 r/m")))
    policy = RoutePolicy(spec)
    assert policy.take_rate("a", 0.0) == 0.0 and policy.take_rate("a", 0.0) == 0.0
    assert policy.take_rate("a", 0.0) == pytest.approx(60.0)  # the per-minute bucket is empty


def test_flow_spec_key_follows_the_limits_and_the_owner() -> None:
    a = FlowSpec("ns/a", rates=(RateSpec(1.0, 5, "1 r/s"),))
    assert a.key == FlowSpec("ns/a", rates=(RateSpec(1.0, 5, "1 r/s"),), allow=("10.0.0.0/8",)).key
    assert a.key != FlowSpec("ns/b", rates=(RateSpec(1.0, 5, "1 r/s"),)).key
    assert a.key != FlowSpec("ns/a", rates=(RateSpec(2.0, 10, "2 r/s"),)).key
    g = FlowSpec("ns/a", global_limit=GlobalLimitSpec(100, 60.0))
    assert "global 100/60s by $remote_addr" in g.label
