"""One request and its response on a client connection: the state both sides of the proxy share.

The client side (`Downstream`) fills it while parsing; the server side (`Upstream`) sends it and answers it.
Request body bytes are framed for the upstream as they arrive (raw for Content-Length, re-chunked for chunked)
and either written straight to the upstream transport or, while no upstream is attached yet (connecting,
waiting behind a pipelined request, retrying), kept in `pending`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyngress.runtime import http1

if TYPE_CHECKING:
    from pyngress.model import Endpoint
    from pyngress.runtime.downstream import Downstream
    from pyngress.runtime.upstream import Upstream

NO_BODY = 0
LENGTH = 1
CHUNKED = 2


class Exchange:
    __slots__ = (
        "attempts",
        "body_sent",
        "canned",
        "client",
        "close_after",
        "endpoint",
        "expect_continue",
        "framing",
        "head",
        "host",
        "http10",
        "keep_alive",
        "method",
        "path",
        "pending",
        "pending_size",
        "request_done",
        "response_started",
        "tried",
        "upstream",
    )

    def __init__(self, client: Downstream, method: bytes, head: bytes, host: bytes, path: bytes,
                 framing: int, keep_alive: bool, http10: bool) -> None:
        self.client = client
        self.method = method
        self.head = head  # the complete upstream request head, built once
        self.host = host
        self.path = path
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

    @property
    def idempotent(self) -> bool:
        return self.method in http1.IDEMPOTENT_METHODS

    @property
    def replayable(self) -> bool:
        """Can the whole request be sent again? Only if no body byte has left `pending` yet."""
        return self.framing == NO_BODY or not self.body_sent

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
            upstream.send(pieces)
        else:
            self.pending.extend(pieces)
            self.pending_size += len(data)

    def end_body(self) -> None:
        self.request_done = True
        if self.framing == CHUNKED:
            if self.upstream is not None:
                self.upstream.send((http1.LAST_CHUNK,))
            else:
                self.pending.append(http1.LAST_CHUNK)

    def take_pending(self) -> list[bytes]:
        pending = self.pending
        if pending:
            self.body_sent = True
        self.pending = []
        self.pending_size = 0
        return pending
