"""CIDR sets for IPv4 and IPv6 as sorted integer ranges: parsed once, matched with one bisect.

`ipaddress` objects cost microseconds each; the hot path instead turns a client address into one int per
connection (`address_int`) and asks `CidrSet.contains(int)`. Both families share one 128-bit space: an IPv4
address a.b.c.d is its IPv4-mapped IPv6 form ::ffff:a.b.c.d, so "10.0.0.0/8" also matches a dual-stack
socket's "::ffff:10.1.2.3", as it should (the same client).

Overlapping and adjacent networks are merged at build time, so `starts` is strictly increasing and an
address is inside iff the range that starts at or before it ends at or after it.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable

_V4_MAPPED = 0xFFFF << 32


def address_int(text: str) -> int | None:
    """The address as an int in the shared space, or None when `text` is not an IP address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 4:
        return _V4_MAPPED | int(address)
    return int(address)


def network_range(text: str) -> tuple[int, int]:
    """First and last address of a network or single address ("10.0.0.0/8", "::1"); ValueError if bad.
    Host bits are cleared ("10.1.2.3/8" is 10.0.0.0/8), as nginx's allow/deny do."""
    network = ipaddress.ip_network(text.strip(), strict=False)
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.version == 4:
        return _V4_MAPPED | first, _V4_MAPPED | last
    return first, last


class CidrSet:
    """An immutable set of networks. `contains(address_int)` is O(log n) with no allocation."""

    __slots__ = ("_ends", "_starts", "networks")

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(networks)
        merged: list[list[int]] = []
        for first, last in sorted(network_range(n) for n in self.networks):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._starts = [r[0] for r in merged]
        self._ends = [r[1] for r in merged]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def contains(self, address: int | None) -> bool:
        if address is None:
            return False
        i = bisect_right(self._starts, address) - 1
        return i >= 0 and address <= self._ends[i]

    def __repr__(self) -> str:
        return f"CidrSet({', '.join(self.networks)})"
