"""Access-log lines: one JSON object per request (the default), or an ingress-nginx `log-format-upstream` template.

Pure: a line is made from the finished `Exchange`, its route's labels, the wall-clock time and the durations
and sizes the recorder measured; writing and buffering are `observability.accesslog`'s job.

JSON fields (always all present, in this order; absent values are null):
  time (UTC, ISO 8601, ms), request_id, client, method, host, path (the request-target as received, query
  included), status, bytes (sent to the client), request_length (read from the client), duration (s),
  upstream_addr, upstream_status, upstream_duration (s, last attempt), namespace, ingress, service, attempts.

Templates use nginx variables (`$name` or `${name}`); `check_log_format` rejects unknown ones, as nginx refuses
to start with them. Values from the request are escaped as nginx's `escape=default` does (`"`, `\\` and bytes
outside printable ASCII as \\xHH), or as JSON with `log-format-escape-json: "true"`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyngress.observability.jsonlines import JsonLines, json_string, request_id_of

if TYPE_CHECKING:
    from pyngress.runtime.exchange import Exchange

Labels = tuple[str, str, str, str, str]  # recorder.RouteLabels: namespace, ingress, service, path, host
__all__ = ["INGRESS_NGINX_FORMAT", "JsonLines", "LineFormat", "check_log_format", "compile_template",
           "json_string", "nginx_escape"]

INGRESS_NGINX_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                        '"$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
                        '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length '
                        '$upstream_response_time $upstream_status $req_id')

_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


class Entry:
    """What one log line may say about one request; made only while the log is on."""

    __slots__ = ("end", "ex", "labels", "received", "sent", "wall")

    def __init__(self, ex: Exchange, labels: Labels, end: float, sent: int, received: int, wall: float) -> None:
        self.ex = ex
        self.labels = labels
        self.end = end  # perf_counter at the end of the response
        self.sent = sent
        self.received = received
        self.wall = wall  # time.time() at the end

    @property
    def request_id(self) -> bytes:
        return request_id_of(self.ex.head)

    @property
    def upstream_addr(self) -> bytes | None:
        endpoint = self.ex.endpoint
        return endpoint.key.encode() if endpoint is not None else None


def nginx_escape(value: bytes) -> bytes:
    """nginx's escape=default: `"`, `\\` and bytes outside printable ASCII as \\xHH."""
    if _UNSAFE.search(value) is None:
        return value
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m.group(0)[0], value)


# -- templates (log-format-upstream) -----------------------------------------------------------------------

Getter = Callable[[Entry], bytes]
LineFormat = Callable[["Exchange", Labels, float, int, int, float], bytes]


def _header(name: str) -> Getter:
    wanted = name.replace("_", "-").encode()

    def get(e: Entry) -> bytes:
        fields = e.ex.fields
        for i in range(0, len(fields) - 3, 4):
            if fields[i].lower() == wanted:
                return fields[i + 2]
        return e.ex.host if wanted == b"host" else b"-"
    return get


def _request(e: Entry) -> bytes:
    ex = e.ex
    return b"%s %s %s" % (ex.method, ex.target, b"HTTP/1.0" if ex.http10 else b"HTTP/1.1")


def _upstream_name(e: Entry) -> bytes:
    ex = e.ex
    if ex.route is None:
        return b"upstream-default-backend" if ex.endpoint is None else b"-"
    b = ex.route.backend
    return f"{b.namespace}-{b.service}-{b.port}".encode()


def _time_local(e: Entry) -> bytes:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(e.wall)).encode()


def _upstream(f: Callable[[Entry], bytes]) -> Getter:
    return lambda e: f(e) if e.ex.endpoint is not None else b"-"


VARIABLES: dict[str, Getter] = {
    "remote_addr": lambda e: e.ex.client.client_ip.encode(),
    "remote_user": lambda e: b"-",
    "time_local": _time_local,
    "time_iso8601": lambda e: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(e.wall)).encode(),
    "msec": lambda e: b"%.3f" % e.wall,
    "request": _request,
    "request_method": lambda e: e.ex.method,
    "request_uri": lambda e: e.ex.target,
    "uri": lambda e: e.ex.path,
    "args": lambda e: e.ex.target.partition(b"?")[2],
    "host": lambda e: e.ex.host,
    "server_protocol": lambda e: b"HTTP/1.0" if e.ex.http10 else b"HTTP/1.1",
    "status": lambda e: b"%d" % e.ex.status,
    "body_bytes_sent": lambda e: b"%d" % e.sent,  # the whole response as forwarded, head included
    "bytes_sent": lambda e: b"%d" % e.sent,
    "request_length": lambda e: b"%d" % e.received,
    "request_time": lambda e: b"%.3f" % (e.end - e.ex.began),
    "upstream_addr": _upstream(lambda e: e.ex.endpoint.key.encode() if e.ex.endpoint else b"-"),
    "upstream_status": _upstream(lambda e: b"%d" % e.ex.status),
    "upstream_response_time": _upstream(lambda e: b"%.3f" % (e.end - e.ex.sent_at)),
    "upstream_response_length": _upstream(lambda e: b"%d" % e.sent),
    "proxy_upstream_name": _upstream_name,
    "proxy_alternative_upstream_name": lambda e: b"",
    "req_id": lambda e: e.request_id or b"-",
    "namespace": lambda e: e.labels[0].encode(),
    "ingress_name": lambda e: e.labels[1].encode(),
    "service_name": lambda e: e.labels[2].encode(),
    "service_port": lambda e: e.ex.route.backend.port.encode() if e.ex.route is not None else b"",
    "attempts": lambda e: b"%d" % e.ex.attempts,
}
# Values from the client, escaped; the others are ours (numbers, names from the configuration).
_CLIENT_VALUES = frozenset({"request", "request_uri", "uri", "args", "host", "req_id"})


def _variable(name: str) -> tuple[Getter, bool] | None:
    if name in VARIABLES:
        return VARIABLES[name], name in _CLIENT_VALUES
    if name.startswith("http_") and len(name) > 5:
        return _header(name[5:]), True
    return None


def check_log_format(text: str) -> str:
    """The template, stripped; ValueError naming the first unknown variable."""
    text = text.strip()
    for m in _VARIABLE.finditer(text):
        name = m.group(1) or m.group(2)
        if _variable(name) is None:
            raise ValueError(f"unknown variable ${name} in the log format")
    return text


def compile_template(text: str, escape_json: bool) -> LineFormat:
    """A function from a finished request to its line (newline included). The template must pass
    check_log_format."""
    parts: list[bytes | tuple[Getter, bool]] = []
    at = 0
    for m in _VARIABLE.finditer(text):
        parts.append(text[at:m.start()].encode())
        found = _variable(m.group(1) or m.group(2))
        assert found is not None, "checked by check_log_format"
        parts.append(found)
        at = m.end()
    parts.append(text[at:].encode())
    escape = _json_inner if escape_json else nginx_escape

    def line(ex: Exchange, labels: Labels, end: float, sent: int, received: int, wall: float) -> bytes:
        e = Entry(ex, labels, end, sent, received, wall)
        out = []
        for part in parts:
            if isinstance(part, bytes):
                out.append(part)
            else:
                get, untrusted = part
                out.append(escape(get(e)) if untrusted else get(e))
        out.append(b"\n")
        return b"".join(out)
    return line


def _json_inner(value: bytes) -> bytes:
    return json_string(value)[1:-1]
