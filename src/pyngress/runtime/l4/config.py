"""What a stream connection reads from its listener: the service, its live balancer and the settings.

A listener holds one `StreamConfig` and a reload replaces it (one attribute assignment); each connection or
UDP flow reads it once when it starts, so a reload never changes a connection half way.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyngress.balancing import Balancer
from pyngress.model import ProxySettings, StreamService
from pyngress.runtime import proxy_protocol


@dataclass(frozen=True, slots=True)
class StreamConfig:
    service: StreamService
    balancer: Balancer
    settings: ProxySettings


def encode_proxy_header(version: int, client: tuple[str, int], local: tuple[str, int]) -> bytes:
    """The PROXY header to send the pod first (b"" for version 0). Addresses we cannot express (a Unix
    socket, an unknown peer) give v1 UNKNOWN / v2 LOCAL, which tell the pod to use the connection's own."""
    if not version:
        return b""
    try:
        if version == 1:
            return proxy_protocol.encode_v1(client[0], client[1], local[0], local[1])
        return proxy_protocol.encode_v2(client[0], client[1], local[0], local[1])
    except ValueError:
        return proxy_protocol.encode_v1_unknown() if version == 1 else proxy_protocol.encode_v2_local()
