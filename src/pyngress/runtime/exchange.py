"""One request and its response on a client connection: the state both sides of the proxy share.

The client side (`Downstream`) fills it while parsing; the server side (`Upstream`) sends it and answers it.
Request body bytes are framed for the upstream as they arrive (raw for Content-Length, re-chunked for chunked)
and either written straight to the upstream transport or, while no upstream is attached yet (connecting,
waiting behind a pipelined request, retrying), kept in `pending`.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Final

from pyngress.routing import canonical_host, normalize_path
from pyngress.runtime import http1

if TYPE_CHECKING:
    from pyngress.balancing.stats import EndpointStats
    from pyngress.model import Endpoint, Route, UpstreamTLS
    from pyngress.policy.limits import ConnectionSlots
    from pyngress.runtime.client_side import ClientSide
    from pyngress.runtime.upstream import Upstream

_clock: Final = perf_counter  # Final: the compiled build reads it from a C static, not the globals

NO_BODY: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2


class Exchange:
    __slots__ = (
        "attempts",
        "began",
        "body_budget",
        "body_sent",
        "canned",
        "client",
        "client_address",
        "close_after",
        "cookie",
        "endpoint",
        "expect_continue",
        "fields",
        "flow_hold",
        "framing",
        "head",
        "host",
        "hsts",
        "http10",
        "keep_alive",
        "method",
        "path",
        "pending",
        "pending_size",
        "replay",
        "replay_size",
        "request_done",
        "response_started",
        "route",
        "sent_at",
        "set_cookie",
        "started",
        "status",
        "target",
        "tracked",
        "tracked_at",
        "tried",
        "upgrade",
        "upstream",
        "upstream_tls",
    )

    def __init__(self, client: ClientSide, method: bytes, head: bytes, host: bytes, path: bytes,
                 framing: int, keep_alive: bool, http10: bool, target: bytes = b"",
                 fields: Sequence[bytes] = ()) -> None:
        self.client = client
        self.method = method
        self.head = head  # the complete upstream request head, built once
        self.host = host
        self.path = path
        self.target = target  # the request-target as received
        self.fields = fields  # the client's forwarded header fields, 4 items each: name, ": ", value, CRLF
        self.framing = framing
        self.keep_alive = keep_alive
        self.http10 = http10
        self.request_done = framing == NO_BODY
        self.expect_continue = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.body_sent = False  # a body byte has been written to some upstream: no replay from here on
        self.upstream: Upstream | None = None
        self.endpoint: Endpoint | None = None
        self.tried: tuple[str, ...] = ()
        self.attempts = 0
        self.response_started = False
        self.close_after = False
        self.canned: bytes | None = None  # a generated response, when the proxy answers itself
        self.tracked: EndpointStats | None = None  # the load-aware stats entry of the attempt in flight
        self.tracked_at = 0.0  # loop time that attempt started
        self.set_cookie: bytes | None = None  # a Set-Cookie line the response must carry (session affinity)
        self.cookie: bytes | None = None  # the request's Cookie field(s)
        # metrics and access log (issue 8): observability.recorder reads them when the response is complete
        self.began = _clock()  # the head was parsed
        self.sent_at = 0.0  # perf_counter of the last dispatch to an endpoint
        self.route: Route | None = None  # the route of the last dispatch
        self.status = 0  # the status sent to the client
        self.upstream_tls: UpstreamTLS | None = None  # backend-protocol HTTPS: how to connect (runtime.pool)
        self.hsts: bytes | None = None  # the Strict-Transport-Security line of an HTTPS response (runtime.https)
        # issue 4, WebSocket: None for a plain request; for `Upgrade: websocket`, the bytes the client sent after
        # its head (held back until the upstream answers 101: before that they could be read as a request)
        self.upgrade: bytes | None = None
        # flow control (issue 5, runtime.flow): the client as a trusted proxy named it (else the connection's),
        # body bytes still allowed (-1: no limit), the connection-limit slot to give back when done
        self.client_address: str | None = None
        self.body_budget = -1
        self.flow_hold: tuple[ConnectionSlots, object] | None = None
        # issue 7: retries (`route` above gives the RetryPolicy). The coarse clock at the first attempt, and a
        # copy of the body pieces already sent, for a replay (None: too big to keep).
        self.started = 0.0
        self.replay: list[bytes] | None = [] if framing != NO_BODY else None
        self.replay_size = 0

    @property
    def idempotent(self) -> bool:
        return self.method in http1.IDEMPOTENT_METHODS

    @property
    def replayable(self) -> bool:
        """Can the whole request be sent again? If no body byte has left `pending` yet, or all are kept."""
        return self.framing == NO_BODY or not self.body_sent or self.replay is not None

    def rewind(self) -> bool:
        """Before sending again: put the body pieces already sent back in front of `pending`. False when
        they were not kept (over client-body-buffer-size)."""
        if not self.body_sent:
            return True
        replay = self.replay
        if replay is None:
            return False
        self.pending[:0] = replay
        self.pending_size += self.replay_size
        self.replay, self.replay_size, self.body_sent = [], 0, False
        return True

    def _keep(self, pieces: Sequence[bytes], size: int) -> None:
        """Keep a copy of body pieces sent upstream while they fit client-body-buffer-size (for a retry)."""
        replay = self.replay
        if replay is None:
            return
        self.replay_size += size
        route = self.route  # set by the first dispatch, before any body byte can be sent
        if route is None or self.replay_size > route.retry.body_buffer:
            self.replay = None  # too big to keep: this request will not be retried once it is sent
        else:
            replay.extend(pieces)

    def add_body(self, data: bytes) -> None:
        if self.framing == CHUNKED:
            if not data:
                return
            pieces: tuple[bytes, ...] = (http1.chunk_header(len(data)), data, b"\r\n")
        else:
            pieces = (data,)
        upstream = self.upstream
        if upstream is not None:
            self.body_sent = True
            if self.replay is not None:
                self._keep(pieces, len(data))
            upstream.send(pieces)
        else:
            self.pending.extend(pieces)
            self.pending_size += len(data)

    def end_body(self) -> None:
        self.request_done = True
        if self.framing == CHUNKED:
            if self.upstream is not None:
                if self.replay is not None:
                    self.replay.append(http1.LAST_CHUNK)
                self.upstream.send((http1.LAST_CHUNK,))
            else:
                self.pending.append(http1.LAST_CHUNK)

    def take_pending(self) -> list[bytes]:
        pending = self.pending
        if pending:
            self.body_sent = True
            if self.replay is not None:
                self._keep(pending, self.pending_size)
        self.pending = []
        self.pending_size = 0
        return pending


class ExchangeView:
    """The request as a hash key template reads it (balancing.hash_key.RequestView); made only for routes
    with upstream-hash-by. `$http_<name>` sees the fields forwarded to the backend (and Host)."""

    __slots__ = ("_ex",)

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex

    @property
    def path(self) -> bytes:  # normalised, no query: computed only when the template reads $uri
        return normalize_path(self._ex.path)

    @property
    def client_address(self) -> str:
        return self._ex.client_address or self._ex.client.client_ip

    @property
    def host(self) -> bytes:
        return canonical_host(self._ex.host)

    @property
    def target(self) -> bytes:
        return self._ex.target

    def header(self, name_lower: bytes) -> bytes | None:
        if name_lower == b"host":
            return self._ex.host
        fields = self._ex.fields
        values = [fields[i + 2] for i in range(0, len(fields) - 3, 4) if fields[i].lower() == name_lower]
        if not values:
            return None
        return (b"; " if name_lower == b"cookie" else b", ").join(values)
