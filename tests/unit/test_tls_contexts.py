"""runtime.tls_contexts: SNI table lookups, contexts built once per certificate and reused across installs."""

from __future__ import annotations

import dataclasses
import ssl
import time
from types import MappingProxyType

import trustme

from pyngress.model import Certificate, Snapshot, TLSConfig, UpstreamTLS
from pyngress.runtime.https import forwarded_https
from pyngress.runtime.tls_contexts import (
    ALPN_OFFER,
    TLSContexts,
    fake_certificate,
    upstream_context,
    upstream_server_hostname,
)

CA = trustme.CA()
FAKE = fake_certificate(time.time())


def certificate(secret: str, *names: str) -> Certificate:
    leaf = CA.issue_cert(*names)
    return Certificate(secret, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(), names, 0.0, secret)


def snapshot(certs: list[Certificate], hosts: dict[str, str], version: int = 1, **settings: object) -> Snapshot:
    tls = TLSConfig(certificates=MappingProxyType({c.secret: c for c in certs}), hosts=MappingProxyType(hosts))
    snap = Snapshot(version, tls=tls)
    return dataclasses.replace(snap, settings=dataclasses.replace(snap.settings, **settings)) if settings else snap


A = certificate("ns/a", "a.example.com")
WILD = certificate("ns/wild", "*.example.com")


def test_context_for_exact_then_wildcard_then_default() -> None:
    serving = TLSContexts(*FAKE).build(snapshot([A, WILD], {"a.example.com": "ns/a", "*.example.com": "ns/wild"}))
    a, wild = serving.exact["a.example.com"], serving.exact["*.example.com"]
    assert a is not wild and serving.default not in (a, wild)
    assert serving.context_for("a.example.com") is a
    assert serving.context_for("A.Example.com.") is a
    assert serving.context_for("b.example.com") is wild
    assert serving.context_for("x.b.example.com") is serving.default
    assert serving.context_for("example.com") is serving.default
    assert serving.context_for(None) is serving.default


def test_contexts_are_reused_across_installs_until_the_certificate_changes() -> None:
    contexts = TLSContexts(*FAKE)
    first = contexts.build(snapshot([A], {"a.example.com": "ns/a"}))
    second = contexts.build(snapshot([A, WILD], {"a.example.com": "ns/a", "*.example.com": "ns/wild"}, 2))
    assert second.exact["a.example.com"] is first.exact["a.example.com"]
    assert second.default is first.default  # the generated default too: sessions survive reloads
    rotated = certificate("ns/a", "a.example.com")
    third = contexts.build(snapshot([rotated], {"a.example.com": "ns/a"}, 3))
    assert third.exact["a.example.com"] is not first.exact["a.example.com"]
    # ssl-ciphers or ssl-protocols changing make new contexts
    fourth = contexts.build(snapshot([rotated], {"a.example.com": "ns/a"}, 4, ssl_protocols=("TLSv1.3",)))
    assert fourth.exact["a.example.com"] is not third.exact["a.example.com"]
    assert fourth.exact["a.example.com"].minimum_version == ssl.TLSVersion.TLSv1_3


def test_default_context_switches_by_sni_and_offers_alpn() -> None:
    serving = TLSContexts(*FAKE).build(snapshot([A], {"a.example.com": "ns/a"}))
    assert serving.default.sni_callback is not None
    assert serving.default.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ALPN_OFFER == ("h2", "http/1.1")  # h2: runtime.h2 (HTTP/2)


def test_a_certificate_openssl_refuses_falls_back_to_the_default() -> None:
    broken = dataclasses.replace(A, key_pem=CA.issue_cert("other.example.com").private_key_pem.bytes())
    serving = TLSContexts(*FAKE).build(snapshot([broken], {"a.example.com": "ns/a"}))
    assert serving.context_for("a.example.com") is serving.default


def test_upstream_contexts() -> None:
    plain = UpstreamTLS()
    ctx = upstream_context(plain)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert upstream_context(UpstreamTLS()) is ctx  # cached by value
    assert upstream_server_hostname(plain) == ""
    verified = UpstreamTLS(verify=True, ca_pem=CA.cert_pem.bytes(), verify_name="web.ns.svc")
    assert upstream_context(verified).verify_mode == ssl.CERT_REQUIRED
    assert upstream_server_hostname(verified) == "web.ns.svc"
    assert upstream_server_hostname(UpstreamTLS(server_name="sni.ns.svc")) == "sni.ns.svc"
    assert plain.pool_suffix != verified.pool_suffix


def test_forwarded_https_reads_the_head_we_built() -> None:
    assert forwarded_https(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert forwarded_https(b"GET / HTTP/1.1\r\nX-Forwarded-Proto: HTTPS \r\n\r\n")
    assert not forwarded_https(b"GET / HTTP/1.1\r\nX-Forwarded-Proto: http\r\n\r\n")
    assert not forwarded_https(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
