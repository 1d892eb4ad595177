"""Session affinity: keep a user on one endpoint, on top of any balancer (which picks for new users).

Both kinds wrap the route's balancer and keep its `pick`/`update` contract; the runtime reads the affinity
input (a cookie value, the client address) into the `PickContext` and, for cookies, asks `token` what to set.

**Cookie** (`affinity: cookie`). The cookie names the endpoint by a token. In `persistent` mode (our default)
the token is a keyed hash of the endpoint's key: identical in every worker and replica that share the salt,
stable while the endpoint exists, so scaling up moves no session; it reveals no address (BLAKE2b keyed with
the salt). In `balanced` mode (ingress-nginx's default) the token is a random value hashed onto a ring of the
endpoints: sessions spread evenly and about 1/(N+1) of them move when an endpoint is added. A token whose
endpoint is gone, not ready or excluded (a failed attempt with change-on-failure) is ignored: the inner
balancer picks, and the runtime sets the new token. A terminating endpoint (weight 0 and `terminating`, as
`health.selection` hands it over) keeps the sessions it has and gets no new ones (persistent mode; a balanced
ring holds only endpoints that take new users, so balanced sessions move).

**Client IP** (`affinity: client-ip`, or a Service's `sessionAffinity: ClientIP`). A table per route maps a
client address to its endpoint and the time it was last seen; an entry idle for longer than the timeout is
forgotten and the address is balanced again. A new address is placed by consistent hashing of the address
(not by the inner balancer), so every worker and every replica, each with its own table, sends it to the
same endpoint while the endpoint set is the same. The table is an LRU bounded by `table_size`: a flood of
addresses evicts the least recently seen, it never grows past the bound.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Sequence

from pyngress.balancing.base import Balancer, PickContext
from pyngress.balancing.hashing import RingHash
from pyngress.model import Endpoint

TOKEN_BYTES = 8  # 16 hex digits: collisions between the endpoints of one route are out of reach


class CookieAffinity:
    __slots__ = ("_by_token", "_inner", "_mode", "_ring", "_rng", "_salt", "_tokens")

    def __init__(self, inner: Balancer, endpoints: Sequence[Endpoint], *, salt: bytes, mode: str = "persistent",
                 rng: random.Random | None = None) -> None:
        self._inner = inner
        self._salt = salt
        self._mode = mode
        self._rng = rng or random.Random()
        self._ring = RingHash(endpoints) if mode == "balanced" else None
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self._inner.update(endpoints)
        if self._ring is not None:
            self._ring.update(endpoints)
        usable = [e for e in endpoints if e.weight > 0]
        self._tokens = {e.key: self._persistent_token(e) for e in usable}
        self._by_token = {token: e for e, token in zip(usable, self._tokens.values(), strict=True)}
        # issue 7: a terminating endpoint (weight 0, marked) keeps the users whose cookie names it; it gets
        # no token of its own, so nobody new is sent to it by a cookie
        for e in endpoints:
            if e.terminating and e.weight == 0:
                self._by_token[self._persistent_token(e)] = e

    def pick(self, ctx: PickContext) -> Endpoint | None:
        """The cookie's endpoint when it is still usable, else a fresh pick by the inner balancer."""
        token = ctx.affinity
        if token:
            if self._ring is not None:
                chosen = self._ring.pick(PickContext(exclude=ctx.exclude, hash_key=token))
            else:
                chosen = self._by_token.get(token)
            if chosen is not None and chosen.key not in ctx.exclude:
                return chosen
        return self._inner.pick(ctx)

    def token(self, endpoint: Endpoint, current: bytes | None) -> bytes | None:
        """The cookie value to set after `endpoint` was picked; None when the client's cookie already fits."""
        if self._ring is not None:  # balanced: keep a token that still maps here, else make one that does
            if current and self._ring.pick(PickContext(hash_key=current)) == endpoint:
                return None
            return self._balanced_token(endpoint)
        token = self._tokens.get(endpoint.key)
        return None if token is None or token == current else token

    def _persistent_token(self, endpoint: Endpoint) -> bytes:
        digest = hashlib.blake2b(endpoint.key.encode(), digest_size=TOKEN_BYTES, key=self._salt[:64])
        return digest.hexdigest().encode()

    def _balanced_token(self, endpoint: Endpoint) -> bytes:
        # a random token that the ring maps to `endpoint`: the pick was made by the inner balancer (spread),
        # and the cookie must lead back to it. Bounded search; with N endpoints about N draws are needed.
        assert self._ring is not None
        token = b""
        for _ in range(64 * 16):
            token = b"%016x" % self._rng.getrandbits(64)
            if self._ring.pick(PickContext(hash_key=token)) == endpoint:
                return token
        return token  # practically unreachable; the next request re-picks and sets a fresh cookie


class ClientIPAffinity:
    __slots__ = ("_inner", "_ring", "_table", "_table_size", "_timeout")

    def __init__(self, inner: Balancer, endpoints: Sequence[Endpoint], *, timeout: float,
                 table_size: int = 65536) -> None:
        self._inner = inner
        self._timeout = timeout
        self._table_size = table_size
        self._table: OrderedDict[str, tuple[Endpoint, float]] = OrderedDict()
        self._ring = RingHash(endpoints)
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self._inner.update(endpoints)
        self._ring.update(endpoints)
        live = {e.key: e for e in endpoints if e.weight > 0 or e.terminating}  # terminating: keep its users
        # entries of endpoints that are gone are dropped; the others follow the new Endpoint objects
        for address, (endpoint, seen) in list(self._table.items()):
            current = live.get(endpoint.key)
            if current is None:
                del self._table[address]
            elif current is not endpoint:
                self._table[address] = (current, seen)

    def pick(self, ctx: PickContext) -> Endpoint | None:
        address, now = ctx.client_address, ctx.now
        entry = self._table.get(address)
        if entry is not None:
            endpoint, seen = entry
            if now - seen <= self._timeout and endpoint.key not in ctx.exclude:
                self._table[address] = (endpoint, now)
                self._table.move_to_end(address)
                return endpoint
            del self._table[address]
        chosen = self._ring.pick(PickContext(address, ctx.exclude, address.encode()))
        if chosen is None:
            chosen = self._inner.pick(ctx)
        if chosen is not None:
            self._table[address] = (chosen, now)
            if len(self._table) > self._table_size:
                self._table.popitem(last=False)
        return chosen

    def __len__(self) -> int:
        return len(self._table)

