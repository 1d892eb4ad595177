"""`backend-protocol`: how the proxy talks to the pods of an Ingress (ingress-nginx's annotation, issue 4).

- `HTTP` (default): HTTP/1.1 over the keep-alive pool, whatever the client speaks;
- `GRPC`: HTTP/2 in clear text (h2c, prior knowledge) to the pod, stream to stream, trailers kept;
- `GRPCS`: the same over TLS (ALPN h2);
- `HTTPS`: HTTP/1.1 over TLS (re-encryption; see the TLS documentation).
ingress-nginx's `AUTO_HTTP` and `FCGI` are not supported: an error Problem, and the Ingress is served with
`HTTP`. Values are case-insensitive, as ingress-nginx reads them.
"""

from __future__ import annotations

from pyngress.config.annotations import Annotations
from pyngress.model import Ingress, Problem

BACKEND_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS")


def backend_protocol(ingress: Ingress) -> tuple[str, list[Problem]]:
    notes = Annotations(ingress)
    protocol = notes.parsed("backend-protocol", "HTTP", _protocol)
    return protocol, notes.problems


def _protocol(value: str) -> str:
    upper = value.strip().upper()
    if upper not in BACKEND_PROTOCOLS:
        raise ValueError(f"{value!r} is not one of {', '.join(BACKEND_PROTOCOLS)}")
    return upper
