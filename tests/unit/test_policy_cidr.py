"""CIDR sets as int ranges: agree with ipaddress for v4, v6 and IPv4-mapped addresses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyngress.policy.cidr import CidrSet, address_int


def test_v4_and_v6_networks_match_their_addresses_only() -> None:
    cidrs = CidrSet(["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1"])
    for inside in ("10.0.0.0", "10.255.255.255", "192.168.1.7", "2001:db8::1", "::1"):
        assert cidrs.contains(address_int(inside)), inside
    for outside in ("11.0.0.0", "9.255.255.255", "192.168.1.8", "2001:db9::", "::2", "127.0.0.1"):
        assert not cidrs.contains(address_int(outside)), outside


def test_ipv4_mapped_ipv6_is_the_same_client_as_ipv4() -> None:
    assert CidrSet(["10.0.0.0/8"]).contains(address_int("::ffff:10.1.2.3"))
    assert CidrSet(["::ffff:10.0.0.0/104"]).contains(address_int("10.1.2.3"))


def test_host_bits_are_cleared_and_bad_networks_raise() -> None:
    assert CidrSet(["10.1.2.3/8"]).contains(address_int("10.200.0.1"))
    with pytest.raises(ValueError):
        CidrSet(["10.0.0.0/33"])


def test_unparsable_address_matches_nothing() -> None:
    assert address_int("not-an-ip") is None
    assert not CidrSet(["0.0.0.0/0", "::/0"]).contains(address_int("nope"))


def test_empty_set_is_false_and_matches_nothing() -> None:
    empty = CidrSet(())
    assert not empty
    assert not empty.contains(address_int("1.2.3.4"))


networks = st.one_of(
    st.builds(lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}", st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, p: f"{ipaddress.IPv6Address(a)}/{p}", st.integers(0, 2**128 - 1), st.integers(0, 128)),
)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


@given(st.lists(networks, max_size=8), st.lists(addresses, max_size=20))
def test_agrees_with_ipaddress(nets: list[str], probes: list[ipaddress.IPv4Address | ipaddress.IPv6Address]
                               ) -> None:
    cidrs = CidrSet(nets)
    parsed = [ipaddress.ip_network(n, strict=False) for n in nets]
    for probe in probes:
        expected = any(probe.version == n.version and probe in n for n in parsed)
        mapped = probe.ipv4_mapped if probe.version == 6 else None
        if mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d
            expected = expected or any(n.version == 4 and mapped in n for n in parsed)
        if probe.version == 4:
            as_v6 = ipaddress.IPv6Address(f"::ffff:{probe}")
            expected = expected or any(n.version == 6 and as_v6 in n for n in parsed)
        assert cidrs.contains(address_int(str(probe))) == expected, (nets, probe)
