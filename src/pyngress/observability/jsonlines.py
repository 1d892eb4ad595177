"""The default access-log line: one JSON object per request. Compiled with the hot path (mypyc): with the log
on (the default) this runs for every request.

Fields, always all present and in this order (null when there is nothing to say): time (UTC, ISO 8601, ms),
request_id, client, method, host, path (the request-target as received, query included), status, bytes (sent
to the client), request_length (read from the client), duration (s), upstream_addr, upstream_status,
upstream_duration (s, last attempt), namespace, ingress, service, attempts.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyngress.runtime.exchange import Exchange

Labels = tuple[str, str, str, str, str]  # recorder.RouteLabels: namespace, ingress, service, path, host

_JSON_UNSAFE = bytes(range(32)) + b'\x7f"\\'  # deleted by translate: a value without them is safe as is
_REQUEST_ID = b"\r\nX-Request-ID: "


def json_string(value: bytes) -> bytes:
    """`value` as a JSON string literal (bytes that are not UTF-8 become U+FFFD)."""
    # fast path (most values): printable ASCII without quote or backslash; translate is cheaper than a regex
    if len(value.translate(None, _JSON_UNSAFE)) == len(value) and value.isascii():
        return b'"' + value + b'"'
    return json.dumps(value.decode("utf-8", "replace")).encode()


class JsonLines:
    """The default format. Per line: one %-format of bytes; the time prefix is cached per second and the
    route's JSON fragment per label set (both bounded: one entry, and the configuration's routes)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""
        self._routes: dict[Labels, bytes] = {}
        self._hosts: dict[bytes, bytes] = {}  # Host -> its JSON literal (hosts repeat; bounded)
        self._upstreams: dict[str, bytes] = {}  # Endpoint.key -> its JSON literal

    def __call__(self, ex: Exchange, labels: Labels, end: float, sent: int, received: int, wall: float) -> bytes:
        second = int(wall)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)).encode()
        route = self._routes.get(labels)
        if route is None:
            route = self._route(labels)
        request_id = request_id_of(ex.head)
        host = self._hosts.get(ex.host)
        if host is None:
            host = json_string(ex.host)
            if len(self._hosts) < 1000:
                self._hosts[ex.host] = host
        endpoint = ex.endpoint
        if endpoint is not None:
            address = self._upstreams.get(endpoint.key)
            if address is None:
                address = json_string(endpoint.key.encode())
                if len(self._upstreams) < 10000:  # bounded, as endpoints come and go
                    self._upstreams[endpoint.key] = address
            upstream = b'%s,"upstream_status":%d,"upstream_duration":%.6f' % (address, ex.status, end - ex.sent_at)
        else:
            upstream = b'null,"upstream_status":null,"upstream_duration":null'
        return (b'{"time":"%s.%03dZ","request_id":%s,"client":"%s","method":"%s","host":%s,"path":%s,'
                b'"status":%d,"bytes":%d,"request_length":%d,"duration":%.6f,"upstream_addr":%s,%s,'
                b'"attempts":%d}\n') % (
            self._prefix, wall % 1 * 1000, json_string(request_id) if request_id else b"null",
            ex.client.client_ip.encode(), ex.method, host, json_string(ex.target), ex.status,
            sent, received, end - ex.began, upstream, route, ex.attempts)

    def _route(self, labels: Labels) -> bytes:
        ns, ingress, service, _, _ = labels
        fragment = b'"namespace":%s,"ingress":%s,"service":%s' % (
            _json_or_null(ns), _json_or_null(ingress), _json_or_null(service))
        if len(self._routes) < 10000:
            self._routes[labels] = fragment
        return fragment


def request_id_of(head: bytes) -> bytes:
    """The X-Request-ID we forwarded (generated, or the client's), read back from the upstream head."""
    at = head.find(_REQUEST_ID)
    if at < 0:
        return b""
    start = at + len(_REQUEST_ID)
    return head[start:head.find(b"\r\n", start)]


def _json_or_null(text: str) -> bytes:
    return json_string(text.encode()) if text else b"null"
