"""What the client side does around a balancer's pick: which route, what the pick may read, what it leaves.

- `route_for`: the matching rule, else the default backend's route.
- `fill_context`: the per-connection PickContext, filled only for routes whose balancer reads the request
  (hash key, affinity cookie, client address) and for retries (the endpoints already tried).
- `affinity_cookie`: after a pick on a cookie-affinity route, the Set-Cookie the response must carry.
- `start_attempt` / `end_attempt`: the load-aware balancers' in-flight count and latency sample, measured
  with the loop's clock (not the ticker's), exactly once per attempt; a failed attempt gives no sample.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pyngress.balancing.affinity import CookieAffinity
from pyngress.routing import normalize_path
from pyngress.runtime import cookies
from pyngress.runtime.exchange import Exchange, ExchangeView

if TYPE_CHECKING:
    from pyngress.balancing import Balancer, PickContext
    from pyngress.model import AffinitySpec, Endpoint, Route
    from pyngress.runtime.state import Serving


def route_for(ex: Exchange, serving: Serving) -> Route | None:
    """The matching rule, else the default backend's route, else None (404)."""
    route = serving.table.match(ex.host, normalize_path(ex.path))
    return route if route is not None else serving.default_route


def fill_context(ctx: PickContext, ex: Exchange, serving: Serving, key: str, now: float) -> PickContext:
    """`ctx` (the connection's, reused: balancers never keep it) filled for this pick."""
    hash_key = serving.hash_keys.get(key)
    ctx.hash_key = hash_key(ExchangeView(ex)) if hash_key is not None else None
    cookie = serving.cookies.get(key)
    ctx.affinity = cookies.cookie_value(ex.cookie, cookie[1]) if cookie is not None else None
    ctx.exclude = ex.tried
    ctx.now = now  # the ticker's: ages EWMAs and client-IP entries, both counted in seconds
    return ctx


def affinity_cookie(ex: Exchange, spec: AffinitySpec, balancer: Balancer, endpoint: Endpoint, route: Route,
                    current: bytes | None) -> None:
    """After a pick on a cookie-affinity route: the Set-Cookie the response must carry, if any."""
    if ex.attempts > 1 and not spec.change_on_failure:
        return  # ingress-nginx: a retried request keeps the cookie it came with, unless change-on-failure
    assert isinstance(balancer, CookieAffinity)
    token = balancer.token(endpoint, current)
    if token is not None:
        agent = ExchangeView(ex).header(b"user-agent") if spec.conditional_samesite_none else None
        ex.set_cookie = cookies.set_cookie(spec, token, route.path, time.time(), agent, ex.client.https)


def start_attempt(ex: Exchange, serving: Serving, endpoint: Endpoint, now: float) -> None:
    entry = ex.tracked = serving.stats.get(endpoint.key)
    entry.start()
    ex.tracked_at = now


def end_attempt(ex: Exchange, ok: bool, now: float) -> None:
    """The attempt in flight ended: a response (`ok`, with its latency) or a failure (no sample)."""
    entry = ex.tracked
    if entry is not None:
        entry.finish(now - ex.tracked_at if ok else None, now)
        ex.tracked = None
