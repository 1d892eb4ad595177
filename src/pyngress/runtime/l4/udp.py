"""UDP relay: per-client flows, each with its own connected socket to one pod.

Theory of operation. UDP has no connections, so we make flows, as kube-proxy's conntrack and nginx's UDP
sessions do: the first datagram from a client address (ip, port) picks an endpoint and opens a UDP socket
`connect`ed to it; later datagrams from that address go out on the same socket, so the pod sees one stable
peer per client. Whatever the pod sends back on that socket is relayed to the client with `sendto` on the
listening socket, so the reply comes from the address and port the client sent to (on a listener bound to a
specific address; a wildcard bind leaves the source address to the routing table, see docs/l4.md).

Flows end when idle for `udp-flow-timeout` (checked by the runtime's ticker, read as "no datagram either
way"), when the pod's host answers with ICMP port unreachable (the socket's next `recv` raises
ConnectionRefusedError: the next datagram from the client opens a new flow, to the next endpoint), after
`proxy-stream-responses` replies per datagram when that is set (DNS-like traffic frees its slot at once),
or when the table is full: the table is an LRU of at most `udp-flow-table-size` flows per listener and
worker, and a new client evicts the least recently active one. Every flow holds one file descriptor, which is
why the table is bounded.

No awaits: the pod sockets are plain non-blocking sockets watched with `loop.add_reader`, so a flow is open
(and its first datagram sent) within the `datagram_received` call that created it. A send that would block
(the socket buffer is full) drops the datagram, as the network would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, cast

from pyngress.balancing import PickContext
from pyngress.model import Endpoint
from pyngress.runtime.l4.config import StreamConfig

if TYPE_CHECKING:
    from pyngress.runtime.l4.runtime import StreamRuntime

log = logging.getLogger("pyngress.l4")

MAX_DATAGRAM = 65535
READS_PER_WAKEUP = 64  # replies relayed per readiness callback before yielding to other work

Address = tuple[str, int]


class UdpListener(asyncio.DatagramProtocol):
    """One listening UDP socket and its flow table."""

    def __init__(self, runtime: StreamRuntime, config: StreamConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: OrderedDict[Address, Flow] = OrderedDict()  # least recently active first
        self.dropped = 0  # datagrams we could not relay (no endpoint, full socket buffer, no fd)
        self._failing = False  # opening flows fails (logged once until one succeeds again)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        client: Address = (addr[0], addr[1])  # IPv6 peers come as 4-tuples: the flow key is (ip, port)
        flow = self.flows.get(client)
        if flow is None:
            flow = self._open(client)
            if flow is None:
                self.dropped += 1
                return
        else:
            self.flows.move_to_end(client)
        flow.send(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: %r", self.config.service.listen_key, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close_flows()

    def _open(self, client: Address) -> Flow | None:
        config, runtime = self.config, self.runtime
        endpoint = config.balancer.pick(PickContext(client[0], now=runtime.now))
        if endpoint is None:
            return None
        while len(self.flows) >= max(1, config.settings.udp_flow_table_size):
            self.flows.popitem(last=False)[1].close()
        try:
            sock = _connected_socket(endpoint)
        except OSError as exc:  # out of file descriptors, no route: this datagram is lost
            if not self._failing:  # once per run of failures, not once per datagram
                log.warning("%s: cannot open a flow to %s: %s", config.service.listen_key, endpoint.key, exc)
            self._failing = True
            return None
        self._failing = False
        flow = Flow(self, client, endpoint, sock, config.settings.proxy_stream_responses)
        self.flows[client] = flow
        runtime.stats.started(endpoint.key)
        runtime.loop.add_reader(sock.fileno(), flow.readable)
        return flow

    def reply(self, data: bytes, client: Address) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    def forget(self, flow: Flow) -> None:
        if self.flows.get(flow.client) is flow:
            del self.flows[flow.client]

    def expire(self, now: float, timeout: float) -> None:
        """Close the flows idle for `timeout` (the runtime's ticker; `seen` flags are reset each pass)."""
        for flow in list(self.flows.values()):
            if flow.seen:
                flow.seen, flow.idle_since = False, now
            elif now - flow.idle_since > timeout:
                flow.close()

    def close_flows(self) -> None:
        for flow in list(self.flows.values()):
            flow.close()


class Flow:
    """One client address <-> one connected socket to one endpoint."""

    __slots__ = ("_limit", "client", "closed", "endpoint", "idle_since", "listener", "replies", "seen",
                 "sent", "sock")

    def __init__(self, listener: UdpListener, client: Address, endpoint: Endpoint, sock: socket.socket,
                 responses: int) -> None:
        self.listener = listener
        self.client = client
        self.endpoint = endpoint
        self.sock = sock
        self._limit = responses  # proxy-stream-responses: replies per datagram that end the flow; 0: none
        self.sent = self.replies = 0
        self.seen = True
        self.idle_since = listener.runtime.now
        self.closed = False

    def send(self, data: bytes) -> None:
        self.seen = True
        self.sent += 1
        try:
            self.sock.send(data)
        except BlockingIOError:
            self.listener.dropped += 1
        except OSError:  # an earlier datagram drew ICMP port unreachable: this endpoint is not listening
            self.listener.dropped += 1
            self.close()

    def readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:  # ICMP port unreachable (ConnectionRefusedError) and the like
                self.close()
                return
            self.seen = True
            self.replies += 1
            self.listener.reply(data, self.client)
            if self._limit and self.replies >= self._limit * self.sent:
                self.close()
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        listener = self.listener
        listener.forget(self)
        with contextlib.suppress(RuntimeError):  # the loop is closed: it forgets its readers itself
            listener.runtime.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        listener.runtime.stats.finished(self.endpoint.key, None, listener.runtime.now)


def _connected_socket(endpoint: Endpoint) -> socket.socket:
    family = socket.AF_INET6 if ":" in endpoint.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((endpoint.address, endpoint.port))  # numeric address: no DNS, returns at once
    except OSError:
        sock.close()
        raise
    return sock
