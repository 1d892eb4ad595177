"""StreamService identities and labels; the PROXY header a stream sends (with its fallbacks)."""

from __future__ import annotations

from pyngress.model import AffinitySpec, Backend, BalanceSpec, StreamService
from pyngress.runtime import proxy_protocol
from pyngress.runtime.l4.config import encode_proxy_header

DB = Backend("shop/db:5432", "shop", "db", "5432")


def test_one_listener_per_protocol_and_port_and_one_balancer_per_way_of_balancing() -> None:
    plain = StreamService("TCP", 9000, DB, "ConfigMap ingress/tcp data.9000")
    assert plain.listen_key == "tcp/9000"
    assert StreamService("UDP", 9000, DB, "x").listen_key == "udp/9000"
    random = StreamService("TCP", 9000, DB, "x", balance=BalanceSpec(algorithm="random"))
    sticky = StreamService("TCP", 9000, DB, "x", affinity=AffinitySpec(kind="client-ip", timeout=60))
    assert len({plain.balancer_key, random.balancer_key, sticky.balancer_key}) == 3
    assert plain.balancer_key == StreamService("TCP", 9000, DB, "y", send_proxy=2).balancer_key  # PROXY: same


def test_proxy_labels() -> None:
    assert StreamService("TCP", 1, DB, "x").proxy_label == ""
    assert StreamService("TCP", 1, DB, "x", accept_proxy=True, send_proxy=2).proxy_label == "in, out v2"
    assert StreamService("TCP", 1, DB, "x", send_proxy=1).proxy_label == "out v1"


def test_the_header_sent_to_the_pod() -> None:
    assert encode_proxy_header(0, ("10.0.0.1", 5000), ("10.0.0.2", 80)) == b""
    v1 = encode_proxy_header(1, ("10.0.0.1", 5000), ("10.0.0.2", 80))
    assert v1 == b"PROXY TCP4 10.0.0.1 10.0.0.2 5000 80\r\n"
    v2 = encode_proxy_header(2, ("2001:db8::1", 5000), ("2001:db8::2", 80))
    expected = proxy_protocol.ProxyHeader("2001:db8::1", 5000, "2001:db8::2", 80)
    assert proxy_protocol.parse(v2) == (expected, len(v2))


def test_an_address_that_cannot_be_written_falls_back_to_unknown_or_local() -> None:
    assert encode_proxy_header(1, ("", 0), ("10.0.0.2", 80)) == b"PROXY UNKNOWN\r\n"
    header = encode_proxy_header(2, ("/run/sock", 0), ("", 0))
    assert proxy_protocol.parse(header) == (proxy_protocol.LOCAL, len(header))
