"""Session affinity, pure: cookie tokens (persistent and balanced), client-IP table, cookie formatting."""

from __future__ import annotations

import random

from pyngress.balancing import NO_CONTEXT, PickContext, SmoothWeightedRoundRobin
from pyngress.balancing.affinity import ClientIPAffinity, CookieAffinity
from pyngress.model import AffinitySpec, Endpoint
from pyngress.runtime.cookies import cookie_value, samesite_none_incompatible, set_cookie


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 8080, name=f"pod-{i}") for i in range(n)]


def cookie(eps: list[Endpoint], *, salt: bytes = b"s3cret", mode: str = "persistent", seed: int = 0
           ) -> CookieAffinity:
    return CookieAffinity(SmoothWeightedRoundRobin(eps, random.Random(seed)), eps, salt=salt, mode=mode,
                          rng=random.Random(seed))


def test_persistent_token_is_stable_across_workers_and_hides_the_address() -> None:
    eps = endpoints(3)
    a, b = cookie(eps, seed=1), cookie(eps, seed=2)  # two workers
    for e in eps:
        token = a.token(e, None)
        assert token is not None and token == b.token(e, None)
        assert b"10.0.0" not in token and b"8080" not in token
    assert cookie(eps, salt=b"other").token(eps[0], None) != a.token(eps[0], None)


def test_a_cookie_leads_back_to_its_endpoint_and_needs_no_new_cookie() -> None:
    eps = endpoints(5)
    sticky = cookie(eps)
    token = sticky.token(eps[3], None)
    for _ in range(20):
        chosen = sticky.pick(PickContext(affinity=token))
        assert chosen == eps[3]
        assert sticky.token(chosen, token) is None


def test_unknown_or_missing_cookie_is_balanced_by_the_inner_balancer() -> None:
    eps = endpoints(4)
    sticky = cookie(eps)
    picks = {sticky.pick(PickContext(affinity=b"not-a-token")) for _ in range(8)}
    assert picks == set(eps)
    assert sticky.pick(NO_CONTEXT) in eps


def test_persistent_scale_up_moves_no_session() -> None:
    eps = endpoints(3)
    sticky = cookie(eps)
    tokens = {e.key: sticky.token(e, None) for e in eps}
    sticky.update(endpoints(4))
    for e in eps:
        assert sticky.pick(PickContext(affinity=tokens[e.key])) == e


def test_endpoint_gone_or_excluded_gets_a_new_endpoint_and_cookie() -> None:
    eps = endpoints(3)
    sticky = cookie(eps)
    token = sticky.token(eps[0], None)
    retry = sticky.pick(PickContext(exclude=(eps[0].key,), affinity=token))
    assert retry is not None and retry != eps[0]
    assert sticky.token(retry, token) not in (None, token)
    sticky.update(eps[1:])
    moved = sticky.pick(PickContext(affinity=token))
    assert moved in eps[1:]


def test_balanced_mode_tokens_map_back_and_scale_up_moves_about_one_in_n_plus_one() -> None:
    eps = endpoints(4)
    sticky = cookie(eps, mode="balanced")
    tokens = []
    for i in range(400):
        e = eps[i % 4]
        token = sticky.token(e, None)
        assert token is not None and sticky.pick(PickContext(affinity=token)) == e
        tokens.append((token, e))
    sticky.update(endpoints(5))
    moved = sum(sticky.pick(PickContext(affinity=t)) != e for t, e in tokens)
    assert 0.5 / 5 <= moved / len(tokens) <= 1.6 / 5


def test_client_ip_sticks_until_idle_for_the_timeout() -> None:
    eps = endpoints(4)
    sticky = ClientIPAffinity(SmoothWeightedRoundRobin(eps, random.Random(0)), eps, timeout=10.0)
    first = sticky.pick(PickContext("192.0.2.7", now=0.0))
    assert first is not None
    # while it keeps coming back within the timeout it stays, even after the endpoint set grows
    sticky.update(endpoints(8))
    for t in range(1, 30):
        assert sticky.pick(PickContext("192.0.2.7", now=float(t))) == first
    # idle past the timeout: placed again, by the consistent hash of its address over today's endpoints
    fresh = ClientIPAffinity(SmoothWeightedRoundRobin(endpoints(8), random.Random(5)), endpoints(8), timeout=10.0)
    expected = fresh.pick(PickContext("192.0.2.7", now=0.0))
    assert sticky.pick(PickContext("192.0.2.7", now=29.0 + 10.5)) == expected


def test_client_ip_placement_agrees_across_workers() -> None:
    eps = endpoints(6)
    a = ClientIPAffinity(SmoothWeightedRoundRobin(eps, random.Random(1)), eps, timeout=60.0)
    b = ClientIPAffinity(SmoothWeightedRoundRobin(eps, random.Random(2)), eps, timeout=60.0)
    for i in range(50):
        address = f"198.51.100.{i}"
        assert a.pick(PickContext(address)) == b.pick(PickContext(address))


def test_client_ip_table_is_bounded() -> None:
    eps = endpoints(3)
    sticky = ClientIPAffinity(SmoothWeightedRoundRobin(eps, random.Random(0)), eps, timeout=60.0, table_size=100)
    for i in range(1000):
        sticky.pick(PickContext(f"203.0.113.{i % 250}.{i}", now=float(i)))
    assert len(sticky) == 100


def test_cookie_value_parsing() -> None:
    assert cookie_value(b"a=1; INGRESSCOOKIE=abc; b=2", b"INGRESSCOOKIE") == b"abc"
    assert cookie_value(b'INGRESSCOOKIE="abc"', b"INGRESSCOOKIE") == b"abc"
    assert cookie_value(b"other=1", b"INGRESSCOOKIE") is None
    assert cookie_value(None, b"INGRESSCOOKIE") is None


def test_set_cookie_attributes() -> None:
    spec = AffinitySpec(kind="cookie", cookie_domain="shop.example.com", expires=3600, max_age=3600, secure=True,
                        samesite="Lax")
    line = set_cookie(spec, b"tok", "/api", 0.0, None)
    assert line == (b"Set-Cookie: INGRESSCOOKIE=tok; Path=/api; Domain=shop.example.com; "
                    b"Expires=Thu, 01 Jan 1970 01:00:00 GMT; Max-Age=3600; Secure; HttpOnly; SameSite=Lax\r\n")
    assert b"Path=/\r" in set_cookie(AffinitySpec(kind="cookie"), b"t", "", 0.0, None).replace(b";", b"\r")


def test_conditional_samesite_none_is_left_out_for_incompatible_clients() -> None:
    spec = AffinitySpec(kind="cookie", samesite="None", conditional_samesite_none=True)
    ios12 = (b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             b"Version/12.1.2 Mobile/15E148 Safari/604.1")
    chrome90 = (b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0.4430.93 "
                b"Safari/537.36")
    assert samesite_none_incompatible(ios12)
    assert samesite_none_incompatible(b"Mozilla/5.0 Chrome/60.0.3112.113 Safari/537.36")
    assert samesite_none_incompatible(b"Mozilla/5.0 (Linux; U; Android 9) UCBrowser/12.13.0.1207 Mobile")
    assert not samesite_none_incompatible(chrome90)
    assert b"SameSite" not in set_cookie(spec, b"t", "/", 0.0, ios12)
    assert b"SameSite=None" in set_cookie(spec, b"t", "/", 0.0, chrome90)
