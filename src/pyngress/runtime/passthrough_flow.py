"""Flow control for `ssl-passthrough` connections (issue 5): who may be relayed, and what the pod is told.

A passthrough connection is relayed as raw TLS, so nothing of HTTP applies to it: no header can carry the
client's address and no 403 can be answered. What does apply, decided when the connection is accepted:

* the access lists of the Ingress (`denylist-source-range`, `whitelist-source-range`, the ConfigMap's
  `block-cidrs`) by client address: a refused client's connection is closed before anything is relayed
  (counted in `FlowGate.refused_access`). The address is the TCP peer, or the source of a PROXY header
  when `use-proxy-protocol` is on and the peer is trusted;
* `proxy-protocol: v1|v2` (ours; HAProxy's `send-proxy` / `send-proxy-v2`, Traefik's `proxyProtocol`): the
  relay first sends the pod a PROXY protocol header naming that client address and the port it connected
  to, so the pod (which must expect the header) sees the client rather than pyngress. The source port is the
  client's, or 0 when the address came from an incoming PROXY header (which names the source port we do not
  keep).

Rate, connection and global limits, `block-user-agents` and `block-referers` need HTTP requests and do not
apply to passthrough connections.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from pyngress.runtime.proxy_protocol import encode_v1, encode_v1_unknown, encode_v2, encode_v2_local

if TYPE_CHECKING:
    from pyngress.model import Route
    from pyngress.runtime.server import ProxyServer


def admit_relay(server: ProxyServer, sock: socket.socket, route: Route, client: str | None) -> bytes | None:
    """None: refused (close the connection). Otherwise the bytes to send the pod before the client's: a
    PROXY header, or nothing."""
    flow = route.flow
    if flow is None:
        return b""
    try:
        peer, local = sock.getpeername(), sock.getsockname()
    except OSError:
        return None  # the client is gone already
    ip = client or str(peer[0])
    gate = server.flow
    policy = gate.policies.get(flow.key)
    if policy is not None and policy.access is not None and not gate.permits_address(policy.access, ip):
        gate.refused_access += 1
        return None
    if not flow.proxy_protocol:
        return b""
    source_port = 0 if client else int(peer[1])
    try:
        if flow.proxy_protocol == 1:
            return encode_v1(ip, source_port, str(local[0]), int(local[1]))
        return encode_v2(ip, source_port, str(local[0]), int(local[1]))
    except ValueError:  # an address we cannot encode (none at all): say so rather than lie
        return encode_v1_unknown() if flow.proxy_protocol == 1 else encode_v2_local()
