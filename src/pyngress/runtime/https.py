"""Per request, on routes with an `HttpsPolicy` (issue 4): redirect plain HTTP to HTTPS, add HSTS to HTTPS.

Called from `Downstream.start` only when the route has a policy and the connection is TLS or the policy
redirects, so routes without TLS pay one attribute test. Decisions, as ingress-nginx makes them:

- On a TLS connection: the response carries the route's HSTS line (if `hsts` is on). Nothing else.
- On a plain connection, the *effective* scheme decides: `https` when a trusted proxy in front (see
  `use-forwarded-headers` / `proxy-real-ip-cidr`) says `X-Forwarded-Proto: https`, else `http`. We read it
  from the upstream head already built (`request_head` writes exactly one `X-Forwarded-Proto`: the trusted
  client's value, or our own scheme for everyone else), so an untrusted client cannot dodge the redirect by
  sending the header itself. Effective https: HSTS, no redirect. Effective http: 308 to
  `https://<host><port><target>`, keeping path and query, except for `/.well-known/acme-challenge/...`
  (HTTP-01 challenges must be answered over plain HTTP).
- Requests that match no rule (the default backend, or our 404) use `TLSConfig.unmatched`: the policy of
  the request's host (see `config.tls`), as ingress-nginx's per-host default location.
- 308 (not 301) so that a POST stays a POST. The port is the HTTPS listener's redirect port (omitted when 443).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyngress.routing import canonical_host
from pyngress.runtime import http1

if TYPE_CHECKING:
    from pyngress.model import HttpsPolicy
    from pyngress.runtime.downstream import Downstream
    from pyngress.runtime.exchange import Exchange

ACME_PREFIX = b"/.well-known/acme-challenge"
_PROTO = b"\r\nX-Forwarded-Proto: "


def intercept(conn: Downstream, ex: Exchange, policy: HttpsPolicy) -> bool:
    """Apply the route's policy; True when the request has been answered here (a redirect)."""
    if policy.per_host is not None:  # a request that matched no rule: its host's policy
        policy = policy_for_host(policy, canonical_host(ex.host).decode("latin-1"))
    if conn.https or forwarded_https(ex.head):
        if policy.hsts:
            ex.hsts = policy.hsts
        return False
    if not policy.redirect or ex.path.lower().startswith(ACME_PREFIX) or not ex.host:
        return False
    close = conn.should_close(ex)
    ex.close_after = close
    location = b"Location: https://%s%s%s\r\n" % (canonical_host(ex.host), redirect_suffix(conn), ex.target)
    conn.answer(ex, http1.generated_response(308, conn.server.date, close=close, head_only=ex.method == b"HEAD",
                                             extra_headers=location))
    return True


def policy_for_host(unmatched: HttpsPolicy, host: str) -> HttpsPolicy:
    """The policy of `host` in `TLSConfig.unmatched`: exact name, then "*." + parent, then `others`."""
    per_host = unmatched.per_host or {}
    policy = (per_host.get(host) or per_host.get("*." + host.partition(".")[2])) if host else None
    return policy or unmatched.others or unmatched


def forwarded_https(head: bytes) -> bool:
    """Does the upstream head we built say X-Forwarded-Proto: https?"""
    at = head.find(_PROTO)
    if at < 0:
        return False
    start = at + len(_PROTO)
    return head[start : head.find(b"\r\n", start)].strip().lower() == b"https"


def redirect_suffix(conn: Downstream) -> bytes:
    listener = conn.server.https
    return listener.redirect_suffix if listener is not None else b""
