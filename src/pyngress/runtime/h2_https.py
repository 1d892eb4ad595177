"""HTTPS policy (redirects, HSTS) for HTTP/2 streams, as `runtime.https` applies it to HTTP/1.1 requests.

- HTTP/2 over TLS (ALPN h2), or h2c behind a trusted proxy that says X-Forwarded-Proto: https: the response
  carries the route's Strict-Transport-Security line.
- h2c with prior knowledge on the plain port, to a host whose policy redirects: 308 to
  `https://<host><port><target>`, except `/.well-known/acme-challenge/...`, as over HTTP/1.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyngress.routing import canonical_host
from pyngress.runtime import http1, https

if TYPE_CHECKING:
    from pyngress.model import HttpsPolicy
    from pyngress.runtime.exchange import Exchange
    from pyngress.runtime.h2_stream import H2Stream


def intercept(stream: H2Stream, ex: Exchange, policy: HttpsPolicy) -> bool:
    """Apply the route's policy; True when the stream has been answered here (a redirect)."""
    if stream.connection.tls or https.forwarded_https(ex.head):
        if policy.hsts:
            ex.hsts = policy.hsts
        return False
    if not policy.redirect or ex.path.lower().startswith(https.ACME_PREFIX) or not ex.host:
        return False
    listener = stream.server.https
    suffix = listener.redirect_suffix if listener is not None else b""
    location = b"Location: https://%s%s%s\r\n" % (canonical_host(ex.host), suffix, ex.target)
    stream.answer(ex, http1.generated_response(308, stream.server.date, close=False,
                                               head_only=ex.method == b"HEAD", extra_headers=location))
    return True
