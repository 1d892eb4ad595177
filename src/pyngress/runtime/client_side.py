"""What an upstream connection needs from the side of the proxy that answers the client.

An `Exchange` belongs to a client side: the HTTP/1.1 `Downstream` (one connection, requests in order) or an
HTTP/2 stream (`runtime.h2_stream.H2Stream`, one per request, many per connection). `Upstream`, the pool and
the balancing helpers talk to it only through this interface, so they forward a response the same way
whichever protocol the client speaks: the response arrives as HTTP/1.1 bytes (`write`, `writelines`) and the
client side turns it into whatever its wire needs.

Contract (no await anywhere: every call is made from a protocol callback):
- `write`/`writelines`: the response as the client would see it over HTTP/1.1, head first, well framed;
- `finished(ex)`: the response is complete (also after a generated `answer_status`);
- `retry(ex, status, cause, sent)`: the attempt failed before any response byte (the route's retry policy
  decides, `runtime.retrying`); `may_retry_status(ex, status)` / `next_attempt(ex, status)`: a response
  status the route retries (http_502...) arrived, dropped for another attempt when allowed (issue 7);
  `dispatch_again(ex)`: resend to the same endpoint (a pooled connection turned out dead), not a new attempt;
- `pause`/`resume(reason)`: the upstream cannot take more request body for now / can again;
- `close()`: the response cannot be completed (the upstream died mid-body): make the client see a truncation;
- `tunnel(ex, transport, head, rest)`: the upstream switched protocols (101, WebSocket): send the 101 `head`,
  then relay raw bytes between the client and `transport` (`rest`: upstream bytes that came with the head).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from pyngress.runtime.exchange import Exchange


class ClientSide(Protocol):
    client_ip: str
    gone: bool  # the client is gone: nothing can be answered any more
    https: bool  # the client's connection is TLS (affinity cookies are then Secure)
    # metrics (issue 8): bytes read from and written to the client, and their values when the previous response
    # completed (observability.recorder takes the difference as the request's and the response's size)
    bytes_in: int
    bytes_out: int
    bytes_in_mark: int
    bytes_out_mark: int

    def write(self, data: bytes) -> None: ...
    def writelines(self, pieces: list[bytes]) -> None: ...
    def should_close(self, ex: Exchange) -> bool: ...
    def finished(self, ex: Exchange) -> None: ...
    # issue 7: `cause` is a runtime.retrying cause, `sent` whether the request reached the endpoint
    def retry(self, ex: Exchange, status: int, cause: int = 0, sent: bool = True) -> None: ...
    def may_retry_status(self, ex: Exchange, status: int) -> bool: ...
    def next_attempt(self, ex: Exchange, status: int) -> None: ...
    def dispatch_again(self, ex: Exchange) -> None: ...
    def answer_status(self, ex: Exchange, status: int) -> None: ...
    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...
    def close(self) -> None: ...
    # the upstream answered 101 to a WebSocket upgrade: relay `head`, then tunnel bytes both ways
    def tunnel(self, ex: Exchange, upstream: asyncio.Transport, head: bytes, rest: bytes) -> None: ...
