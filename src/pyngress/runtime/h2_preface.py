"""Cleartext HTTP/2 with prior knowledge (h2c, RFC 9113 3.3) on the plain HTTP port.

A client that knows the server speaks HTTP/2 (gRPC insecure channels, `curl --http2-prior-knowledge`,
h2load) opens with the connection preface `PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`. llhttp recognises it and
stops with "Pause on PRI/Upgrade" (after checking every byte of it), which only ever happens on the error path
of `Downstream.data_received`: detecting h2c costs the HTTP/1.1 hot path nothing. The connection's transport
then moves to a new `H2Downstream`, which receives the preface and whatever followed it.

`Upgrade: h2c` from an HTTP/1.1 request is a different thing and is never honoured or forwarded (a known
request smuggling vector through proxies that pass the upgrade on): such a request is answered as HTTP/1.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyngress.runtime.downstream import Downstream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_LLHTTP_PREFACE_PAUSE = "Pause on PRI/Upgrade"


def is_preface(exc: Exception, data: bytes) -> bool:
    return bool(exc.args) and exc.args[0] == _LLHTTP_PREFACE_PAUSE


def hand_over(downstream: Downstream, data: bytes) -> None:
    """Move the connection to HTTP/2. `data` is the read that completed the preface (usually all of it)."""
    from pyngress.runtime.h2 import take_over  # loaded only when someone speaks HTTP/2

    transport = downstream.transport
    if transport is None:
        return
    if data.startswith(PREFACE):
        rest = data[len(PREFACE):]
    else:  # the preface came in pieces: llhttp saw the earlier ones, which the partial-head count recorded
        rest = data[max(0, len(PREFACE) - downstream._head_bytes):]
    downstream.closing = downstream.gone = True
    take_over(downstream.server, transport, PREFACE + rest)  # registers the new session first, so that
    downstream.server.connection_closed(downstream)  # a drain in progress does not see zero connections
