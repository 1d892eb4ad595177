"""Flow and access control on the request path: the glue between `Downstream.start` and `policy/`.

`Downstream.start` (HTTP/1.1) and `H2Stream.on_request` (HTTP/2) call `body_fits` for requests with a body
and `admit` for routes with a FlowSpec (`Route.flow is not None`: one attribute test for every other route).
Both answer the refusal themselves and return False; True means "dispatch it". A global limit that must ask
Redis makes `admit` return False too, after scheduling the rest of the checks: the dispatch then happens when
Redis answers (if the client is still there and the request still the one its client side waits on).

Live state (`RoutePolicy`: buckets, counts, global batches) is kept by `FlowSpec.key` across reloads: in
this worker, or, with `--workers N`, rate buckets and connection counts in the region the parent mapped before
forking (`configure(shared=...)`, see policy.shared_buckets and policy.shared_connections). A request holding
a connection slot keeps a ticket (`Exchange.flow_hold`) that `release` gives back; a WebSocket's tunnel takes
it over (`hand_over`) until it closes. The client address is the request's forwarded address when a trusted
proxy gave one (`Exchange.client_address`), else the connection's (the TCP peer, or the PROXY protocol
source).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from math import ceil
from typing import TYPE_CHECKING, Any, Protocol

from pyngress.balancing.hash_key import HashKey, compile_hash_key
from pyngress.model import Snapshot
from pyngress.model.flow import FlowSpec
from pyngress.observability import events
from pyngress.policy import shared_buckets, shared_connections
from pyngress.policy.access import AccessList
from pyngress.policy.cidr import address_int
from pyngress.policy.flow import RoutePolicy, SharedCounts
from pyngress.policy.global_window import ADMIT, ASK, PREFETCH, Key, WindowBatches
from pyngress.policy.limits import ConnectionSlots
from pyngress.policy.shared_buckets import Buffer
from pyngress.runtime import http1
from pyngress.runtime.exchange import LENGTH, Exchange, ExchangeView

if TYPE_CHECKING:
    from pyngress.model import Route
    from pyngress.runtime.global_limit import GlobalLimiter
    from pyngress.runtime.server import ProxyServer
    from pyngress.runtime.state import Serving


class Client(Protocol):
    """What the checks need of the side that answers the client: `Downstream` (HTTP/1.1) or `H2Stream`."""

    server: ProxyServer
    client_ip: str
    gone: bool

    def should_close(self, ex: Exchange) -> bool: ...
    def answer(self, ex: Exchange, response: bytes) -> None: ...
    def dispatch(self, ex: Exchange, serving: Serving, route: Route, failed: int = 503) -> None: ...
    def close(self) -> None: ...

ADDRESS_CACHE_LIMIT = 65536
BUCKETS_SIZE = shared_buckets.DEFAULT_SLOTS * shared_buckets.SLOT.size
RESERVE_ATTEMPTS = 8
log = logging.getLogger("pyngress.flow")


class FlowGate:
    def __init__(self, server: ProxyServer, workers: int = 1) -> None:
        self.server = server
        self.clock = server.clock  # the coarse clock, read per request: one attribute, not a property
        self.workers = workers
        self.policies: dict[str, RoutePolicy] = {}
        # spec key -> (global limit state, the key template (None: $remote_addr, read directly), Redis prefix)
        self.batches: dict[str, tuple[WindowBatches, HashKey | None, bytes]] = {}
        self.global_limiter: GlobalLimiter | None = None
        self._addresses: dict[str, int | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._configured = False  # by `configure` (pyngress run): from then on, say when Redis is missing
        self.shared: Buffer | None = None
        self.counts: SharedCounts | None = None
        self._wait = 0.0  # `_more_rates`' answer: the wait of the limit that refused
        # refusals by reason, plain counters for the metrics exporter (only refusals pay for them)
        self.refused_access = 0  # 403: deny / allow lists, blocked agents and referers
        self.refused_rate = 0  # limit-rps / limit-rpm
        self.refused_connections = 0  # limit-connections
        self.refused_global = 0  # global-rate-limit over the limit (and fail-closed 503s)
        self.refused_body = 0  # proxy-body-size: 413

    def configure(self, *, workers: int = 1, redis_url: str = "", redis_timeout: float = 0.5,
                  shared: Buffer | None = None, slot: int = 0) -> None:
        """Worker count, this worker's index (`slot`) and the limits they share (`shared`: a region of
        `shared_size(workers)` bytes mapped before the fork, rate buckets then connection counts; without it
        each worker enforces 1/workers of each limit), and the Redis of global limits."""
        from pyngress.runtime.global_limit import GlobalLimiter

        self.workers = max(1, workers)
        self.shared, self.counts = shared, None
        if shared is not None and len(shared) >= shared_size(self.workers) and self.workers > 1:
            view = memoryview(shared)
            self.shared = view[:BUCKETS_SIZE]
            counts = view[BUCKETS_SIZE:shared_size(self.workers)]
            # this worker may replace one that died holding slots: what that one counted is void
            shared_connections.clear_column(counts, self.workers, slot)
            self.counts = (counts, self.workers, slot)
        self.policies = {}  # rebuilt with the new share
        if redis_url:
            self.global_limiter = GlobalLimiter(redis_url, timeout=redis_timeout)
        self._configured = True
        self.install(self.server.dataplane.serving.snapshot)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.global_limiter is not None:
            await self.global_limiter.close()

    def install(self, snapshot: Snapshot) -> None:
        """Policies for the routes of `snapshot`; those whose spec did not change keep their live tables."""
        specs = {r.flow.key: r.flow for r in snapshot.routes if r.flow is not None}
        if snapshot.default_flow is not None:
            specs[snapshot.default_flow.key] = snapshot.default_flow
        size = snapshot.settings.limit_table_size
        old, self.policies = self.policies, {}
        for key, spec in specs.items():
            policy = old.get(key)
            if policy is None or policy.spec != spec or len(policy.rates) != len(spec.rates):
                policy = _carry_over(RoutePolicy(spec, workers=self.workers, table_size=size,
                                                 shared=self.shared, counts=self.counts), policy)
            self.policies[key] = policy
        old_batches, self.batches = self.batches, {}
        for key, spec in specs.items():
            g = spec.global_limit
            if g is None:
                continue
            kept = old_batches.get(key)
            if self.global_limiter is None and self._configured and not old_batches:
                log.warning("Ingress %s has global-rate-limit but pyngress runs without --redis-url: "
                            "the global limit is not applied", spec.owner)
            template = None if g.key == "$remote_addr" else compile_hash_key(g.key)
            self.batches[key] = kept or (WindowBatches(g.limit, g.window, g.batch, size), template,
                                         f"pyngress:grl:{spec.owner}:{g.limit}/{g.window:g}:".encode())
            self.policies[key].global_batches = self.batches[key]

    # -- the checks ---------------------------------------------------------------------------------------

    def admit(self, client: Client, ex: Exchange, serving: Serving, route: Route, may_wait: bool = True) -> bool:
        """False: refused and answered, or (global limit, `may_wait`) to be dispatched once Redis answers.
        `may_wait=False` (gRPC relays, which cannot be resumed later): a request whose key needs a Redis
        reservation is admitted and the reservation made in the background.

        Every request of a limited route passes here, so the common shapes (rate and connection limits, with
        no list or exemption to match) take the short way: no address parsing, one lookup per limit."""
        flow = route.flow
        assert flow is not None
        policy = self.policies.get(flow.key)
        if policy is None:  # a route of a configuration installed without us (cannot happen via install)
            return True
        ip = ex.client_address or client.client_ip
        if policy.screened:  # access lists, exemptions, a global limit: the whole way
            return self._admit_screened(client, ex, serving, route, flow, policy, ip, may_wait)
        rate = policy.rate
        if rate is not None:
            now = self.clock.now
            wait = rate.take(ip, now)
            if wait or (policy.more_rates and self._more_rates(policy, ip, now)):
                return self._refuse_rate(client, ex, flow, wait or self._wait)
        slots = policy.connections
        if slots is not None:
            ticket = slots.take(ip)
            if ticket is None:
                return self._refuse_connections(client, ex, flow)
            ex.flow_hold = (slots, ticket)
        batches = policy.global_batches
        if batches is not None and self.global_limiter is not None:
            return self._admit_global(client, ex, serving, route, flow, may_wait, ip, batches)
        return True

    def _more_rates(self, policy: RoutePolicy, ip: str, now: float) -> bool:
        """limit-rpm next to limit-rps: True (refuse, `_wait` set) when one of them has no token left."""
        for limiter in policy.more_rates:
            wait = limiter.take(ip, now)
            if wait:
                self._wait = wait
                return True
        return False

    def _admit_screened(self, client: Client, ex: Exchange, serving: Serving, route: Route, flow: FlowSpec,
                        policy: RoutePolicy, ip: str, may_wait: bool) -> bool:
        address = self._address(ip) if policy.needs_address else None
        access = policy.access
        if access is not None and not self._permits(access, ip, ex):
            self.refused_access += 1
            _report(flow, "access")
            refuse(client, ex, 403)
            return False
        if address is None or not policy.exempt.contains(address):
            for limiter in policy.rates:
                wait = limiter.take(ip, self.clock.now)
                if wait:
                    return self._refuse_rate(client, ex, flow, wait)
            slots = policy.connections
            if slots is not None:
                ticket = slots.take(ip)
                if ticket is None:
                    return self._refuse_connections(client, ex, flow)
                ex.flow_hold = (slots, ticket)
        batches = policy.global_batches
        if batches is not None and self.global_limiter is not None \
                and (address is None or not policy.global_ignored.contains(address)):
            return self._admit_global(client, ex, serving, route, flow, may_wait, ip, batches)
        return True

    def _refuse_rate(self, client: Client, ex: Exchange, flow: FlowSpec, wait: float) -> bool:
        self.refused_rate += 1
        _report(flow, "rate")
        refuse(client, ex, flow.req_status, b"Retry-After: %d\r\n" % max(1, ceil(wait)))
        return False

    def _refuse_connections(self, client: Client, ex: Exchange, flow: FlowSpec) -> bool:
        self.refused_connections += 1
        _report(flow, "connections")
        refuse(client, ex, flow.conn_status)
        return False

    def permits_address(self, access: AccessList, ip: str) -> bool:
        """The address part of the access lists (ssl-passthrough connections have no headers to check)."""
        verdict = access.admits(ip)
        if verdict is None:
            verdict = access.remember(ip, access.permits_address(self._address(ip)))
        return verdict

    def _permits(self, access: AccessList, ip: str, ex: Exchange) -> bool:
        verdict = access.admits(ip)
        if verdict is None:
            verdict = access.remember(ip, access.permits_address(self._address(ip)))
        if verdict and access.reads_headers:
            view = ExchangeView(ex)
            return access.permits_headers(view.header(b"user-agent"), view.header(b"referer"))
        return verdict

    def _address(self, ip: str) -> int | None:
        cache = self._addresses
        try:
            return cache[ip]
        except KeyError:
            if len(cache) >= ADDRESS_CACHE_LIMIT:
                cache.clear()
            address = cache[ip] = address_int(ip)
            return address

    def _admit_global(self, client: Client, ex: Exchange, serving: Serving, route: Route, flow: FlowSpec,
                      may_wait: bool, ip: str, state: tuple[WindowBatches, HashKey | None, bytes]) -> bool:
        batches, template, prefix = state
        key: Key = ip if template is None else template(ExchangeView(ex))  # the address as is: no encoding
        now = time.time()
        verdict = batches.take(key, now)
        if verdict == ADMIT:
            return True
        if verdict == PREFETCH or (verdict == ASK and not may_wait):  # the next batch is reserved meanwhile
            self._spawn(self._prefetch(batches, key, prefix, now))
            return True
        if verdict != ASK:
            self.refused_global += 1
            _report(flow, "global")
            retry = b"Retry-After: %d\r\n" % max(1, ceil(batches.retry_after(now)))
            refuse(client, ex, flow.global_status, retry)
            return False
        self._spawn(self._ask(client, ex, serving, route, flow, batches, key, prefix))
        return False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prefetch(self, batches: WindowBatches, key: Key, prefix: bytes, now: float) -> None:
        assert self.global_limiter is not None
        window = batches.window_of(now)
        await self.global_limiter.reserve(batches, _redis_key(prefix, window, key), key, window,
                                          self.server.loop.time())  # a failure is counted there

    async def _ask(self, client: Client, ex: Exchange, serving: Serving, route: Route, flow: FlowSpec,
                   batches: WindowBatches, key: Key, prefix: bytes) -> None:
        limiter = self.global_limiter
        assert limiter is not None
        verdict, now = ASK, time.time()
        for _ in range(RESERVE_ATTEMPTS):  # waiters of one reservation may use it up before us: ask again
            window = batches.window_of(now)
            ok = await limiter.reserve(batches, _redis_key(prefix, window, key), key, window,
                                       self.server.loop.time())
            if not _still_waiting(client, ex):
                release(ex)
                return
            now = time.time()
            if not ok:
                if serving.settings.global_rate_limit_fail_closed:
                    self.refused_global += 1
                    _report(flow, "global")
                    refuse(client, ex, 503)
                else:
                    client.dispatch(ex, serving, route)
                return
            verdict = batches.take(key, now)
            if verdict != ASK:
                break
        if verdict == PREFETCH:
            self._spawn(self._prefetch(batches, key, prefix, now))
        if verdict in (ADMIT, PREFETCH):
            client.dispatch(ex, serving, route)
        else:  # used up, or still contended after RESERVE_ATTEMPTS: refusing keeps the limit a hard one
            self.refused_global += 1
            _report(flow, "global")
            retry = b"Retry-After: %d\r\n" % max(1, ceil(batches.retry_after(now)))
            refuse(client, ex, flow.global_status, retry)


def _redis_key(prefix: bytes, window: int, key: Key) -> bytes:
    return b"%s%d:%s" % (prefix, window, key if isinstance(key, bytes) else key.encode())


def shared_size(workers: int) -> int:
    """Bytes of the region `pyngress run --workers N` maps before forking: rate buckets, connection counts."""
    return BUCKETS_SIZE + shared_connections.region_size(workers)


def _report(flow: FlowSpec, kind: str) -> None:
    """The metrics' view of a refusal (pyngress_rate_limited_requests{namespace, ingress, limit})."""
    namespace, _, name = flow.owner.partition("/")
    events.rate_limited(namespace, name, kind)


def body_fits(client: Client, ex: Exchange, limit: int) -> bool:
    """proxy-body-size: a declared length over `limit` is refused before anything is sent; a chunked body
    gets a budget that `Downstream.on_body` spends (413 and the upstream request aborted when it runs out)."""
    if ex.framing == LENGTH:
        if _content_length(ex.head) > limit:
            client.server.flow.refused_body += 1
            refuse(client, ex, 413)
            return False
        return True
    if ex.pending_size > limit:  # chunked, and already past the limit in what arrived with the head
        client.server.flow.refused_body += 1
        refuse(client, ex, 413)
        return False
    if not ex.request_done:
        ex.body_budget = limit - ex.pending_size
    return True


def body_overflow(client: Client, ex: Exchange) -> None:
    """A body without a declared length grew past proxy-body-size (HTTP/2 DATA; HTTP/1.1 chunked goes through
    `Downstream.refuse`): the upstream request is aborted and the client gets 413 (or, if the response had
    already started, a broken one)."""
    client.server.flow.refused_body += 1
    if ex.upstream is not None:
        ex.upstream.abandon()
        ex.upstream = None
    if ex.response_started:
        client.close()
    else:
        refuse(client, ex, 413)


def _still_waiting(client: Client, ex: Exchange) -> bool:
    """After an await: is `ex` still the request this client side waits to dispatch?"""
    if client.gone:
        return False
    queue = getattr(client, "queue", None)  # HTTP/1.1: the first of the connection's queue
    return ex is (queue[0] if queue else getattr(client, "ex", None))  # HTTP/2: the stream's one exchange


def _content_length(head: bytes) -> int:
    """The Content-Length we wrote into the upstream head (llhttp validated the client's: digits only)."""
    at = head.rfind(b"\r\nContent-Length: ")
    if at < 0:
        return 0
    end = head.index(b"\r\n", at + 18)
    return int(head[at + 18:end])


def refuse(client: Client, ex: Exchange, status: int, extra: bytes = b"") -> None:
    close = client.should_close(ex)
    ex.close_after = close
    client.answer(ex, http1.generated_response(status, client.server.date, close=close,
                                               head_only=ex.method == b"HEAD", extra_headers=extra))


def release(ex: Exchange) -> None:
    """The request ended: give its connection-limit slot back (called once; clears the hold)."""
    hold = ex.flow_hold
    if hold is not None:
        ex.flow_hold = None
        hold[0].release(hold[1])


def hand_over(ex: Exchange) -> tuple[ConnectionSlots, object] | None:
    """A WebSocket's upgrade was accepted: its connection-limit slot passes from the request to the tunnel,
    which gives it back with `release_hold` when it closes (nginx's limit_conn counts a WebSocket for the
    connection's whole life too)."""
    hold, ex.flow_hold = ex.flow_hold, None
    return hold


def release_hold(hold: tuple[ConnectionSlots, object] | None) -> None:
    if hold is not None:
        hold[0].release(hold[1])


def _carry_over(new: RoutePolicy, old: RoutePolicy | None) -> RoutePolicy:
    """Keep the live tables when only the access lists changed (same limits: same key)."""
    if old is not None and old.spec.rates == new.spec.rates and old.spec.connections == new.spec.connections:
        new.rates, new.rate, new.more_rates, new.connections = old.rates, old.rate, old.more_rates, old.connections
    return new
