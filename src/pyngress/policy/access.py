"""Access lists: who may use a route at all (403 otherwise).

- allowlist-source-range / whitelist-source-range: only these networks (annotation, else the ConfigMap's);
- denylist-source-range and the ConfigMap's block-cidrs: never these; checked first, so deny wins over allow
  (ingress-nginx writes its deny rules before its allow rules);
- block-user-agents, block-referers (ConfigMap): entries as in nginx's map: a plain string matches the whole
  value ignoring case, "~regex" searches case-sensitively, "~*regex" ignoring case. A request without the
  header is never blocked by these.

An address that does not parse (a trusted proxy's garbage) matches no network: it is refused by an allowlist
and not by a denylist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pyngress.policy.cidr import CidrSet


class TextMatcher:
    __slots__ = ("_exact", "_regex")

    def __init__(self, entries: Iterable[str]) -> None:
        exact: set[bytes] = set()
        patterns: list[str] = []
        for entry in entries:
            if entry.startswith("~*"):
                patterns.append(f"(?i:{entry[2:]})")
            elif entry.startswith("~"):
                patterns.append(f"(?:{entry[1:]})")
            elif entry:
                exact.add(entry.lower().encode("latin-1"))
        self._exact = frozenset(exact)
        self._regex = re.compile("|".join(patterns).encode("latin-1")) if patterns else None

    def __bool__(self) -> bool:
        return bool(self._exact) or self._regex is not None

    def matches(self, value: bytes | None) -> bool:
        if value is None:
            return False
        if value.lower() in self._exact:
            return True
        return self._regex is not None and self._regex.search(value) is not None


def check_pattern(entry: str) -> str:
    """Validate one block-user-agents / block-referers entry (config time); ValueError names the fault."""
    if entry.startswith("~"):
        try:
            re.compile(entry[2:] if entry.startswith("~*") else entry[1:])
        except re.error as exc:
            raise ValueError(f"{entry!r} is not a valid regular expression: {exc}") from None
    return entry


VERDICT_CACHE_LIMIT = 65536


class AccessList:
    """allow / deny by address, block by User-Agent and Referer.

    The address verdict of each client is remembered (`admits`): a connection's requests all come from one
    address, so after the first request it costs one dict lookup. Bounded: cleared when full."""

    __slots__ = ("_verdicts", "agents", "allow", "deny", "referers")

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = (), agents: Iterable[str] = (),
                 referers: Iterable[str] = ()) -> None:
        allowed = CidrSet(allow)
        self.allow = allowed if allowed else None
        self.deny = CidrSet(deny)
        self.agents = TextMatcher(agents)
        self.referers = TextMatcher(referers)
        self._verdicts: dict[str, bool] = {}

    @property
    def reads_headers(self) -> bool:
        return bool(self.agents) or bool(self.referers)

    def permits(self, address: int | None, agent: bytes | None = None, referer: bytes | None = None) -> bool:
        return self.permits_address(address) and self.permits_headers(agent, referer)

    def permits_address(self, address: int | None) -> bool:
        if self.deny.contains(address):
            return False
        return self.allow is None or self.allow.contains(address)

    def permits_headers(self, agent: bytes | None, referer: bytes | None) -> bool:
        return not (self.agents.matches(agent) or self.referers.matches(referer))

    def admits(self, client: str) -> bool | None:
        """The remembered address verdict of `client` (its address as text), None when not yet judged."""
        return self._verdicts.get(client)

    def remember(self, client: str, verdict: bool) -> bool:
        if len(self._verdicts) >= VERDICT_CACHE_LIMIT:
            self._verdicts.clear()
        self._verdicts[client] = verdict
        return verdict
