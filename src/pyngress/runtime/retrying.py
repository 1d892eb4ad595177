"""Whether a failed attempt moves on to another endpoint: nginx's proxy_next_upstream rules plus a budget.

Called only when an attempt has failed (never on the success path). An attempt is retried when all hold:

1. its cause is one the route's policy names: `error` (connect failure, connection closed before a response
   head), `timeout` (connect timeout, or read/send timeout before the response head), or a response status
   listed as `http_NNN` (the response is then discarded unread, as nginx does, and never reaches the client);
2. the method is idempotent, or nothing of the request was sent (a connect failure), or the policy says
   `non_idempotent`: a POST that reached a backend may have been acted on;
3. the request can be replayed: no body, or every body byte sent so far is still held (bodies are kept for
   replay up to `client-body-buffer-size`; past it, no retry);
4. fewer than `proxy-next-upstream-tries` attempts were made (0: no limit) and less than
   `proxy-next-upstream-timeout` has passed since the first (0: no limit);
5. the service's retry budget has room (checked last, because it counts the retry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyngress.runtime.exchange import Exchange
    from pyngress.runtime.server import ProxyServer

ERROR = 0
TIMEOUT = 1
STATUS = 2
INVALID_HEADER = 3


def allowed(ex: Exchange, server: ProxyServer, cause: int, status: int, sent: bool) -> bool:
    route = ex.route
    if route is None:
        return False
    policy = route.retry
    if cause == ERROR and not policy.on_error:
        return False
    if cause == TIMEOUT and not policy.on_timeout:
        return False
    if cause == STATUS and status not in policy.statuses:
        return False
    if cause == INVALID_HEADER and not policy.on_invalid_header:
        return False
    if sent and not ex.idempotent and not policy.non_idempotent:
        return False
    if policy.tries and ex.attempts >= policy.tries:
        return False
    if policy.timeout and server.loop.time() - ex.started >= policy.timeout:
        return False
    if not ex.rewind():
        return False
    return server.health.budget_allows(route.backend.key)
