"""Client connections that are not HTTP/1.1 `Downstream`s: what `ProxyServer` asks of them (issue 4).

An HTTP/2 connection (`runtime.h2.H2Downstream`) and a WebSocket tunnel (`runtime.tunnel.Tunnel`) register
with `ProxyServer.session_opened` and leave with `session_closed`. The server's ticker, reloads and draining
reach them through this interface only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyngress.model import ProxySettings


class Session(Protocol):
    def tick(self, now: float, settings: ProxySettings) -> None:
        """The ticker: `now` is already moved back by one tick (stamps may be that old); close what is idle."""

    def retain(self, endpoint_keys: Collection[str]) -> None:
        """A new configuration was installed: `endpoint_keys` are the endpoints it may still send to."""

    def drain(self) -> None:
        """Shutdown: take no new work, close once the work in flight is done."""

    def abort(self) -> None:
        """The drain's grace is over: close now."""
