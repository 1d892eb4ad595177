"""SSLContext objects for the HTTPS listener and for backend TLS, built once per certificate per install.

`TLSContexts.build(snapshot)` turns the Snapshot's `TLSConfig` into a `TLSServing`: one server context per
certificate, the SNI table (name -> context) and the default context. Contexts are cached by what they are
made of (certificate, key, ssl-protocols, ssl-ciphers), so a reload that does not touch a certificate reuses
its context, and with it its session cache and ticket keys (clients keep resuming); a rotated Secret gets a
new context. Nothing is built per connection.

SNI selection (`TLSServing.context_for`): the exact name, then "*." + parent (a wildcard covers one label),
then the default. Every connection starts on the default context (the one given to the ssl module at
accept time); its `sni_callback` switches the handshake to the chosen context, reading the table of the
newest install (the callback is rebound at each install). Connections already established keep their
session and certificate whatever a reload does: only new handshakes see a rotated Secret.

Certificates reach OpenSSL through a memfd (`/proc/self/fd/N`), never a file on disk: Python's
`load_cert_chain` only takes paths. Elsewhere (not Linux) a private temporary file is used and removed at once.

ALPN: `ALPN_OFFER` is the one list offered on every server context (see `runtime.https_listener`).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import functools
import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyngress.model import Certificate, ProxySettings, Route, Snapshot, UpstreamTLS

log = logging.getLogger("pyngress")

# The application protocols offered in the TLS handshake, in order of preference; each has its branch in
# `https_listener.protocol_for_alpn` ("h2": runtime.h2, issue 4).
ALPN_OFFER: tuple[str, ...] = ("h2", "http/1.1")

# TLS session ticket keys (name 16 + HMAC 32 + AES 32 bytes, OpenSSL's layout), one set per start: made when this
# module is imported, which `pyngress run` does before it forks its workers, so every worker (and every context
# of every install) encrypts and decrypts tickets with the same keys, as nginx's workers do. Without it each
# context makes its own, and with --workers N a returning client resumes only when SO_REUSEPORT happens to send
# it to the same worker (1 in N).
TICKET_KEYS = os.urandom(80)

FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"  # ingress-nginx's, so tools that know it recognise it
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def fake_certificate(now: float, days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate for `ingress.local` (chain PEM, key PEM): the default certificate
    when --default-ssl-certificate is not given. Generated at start, so each start gets a new key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CN)])
    start = dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days + 1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """`ctx.load_cert_chain` from memory (see the module docstring)."""
    pem = chain_pem.rstrip(b"\n") + b"\n" + key_pem
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("pyngress-cert", os.MFD_CLOEXEC)
        try:
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view):]
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:  # mode 0700
        path = os.path.join(tmp, "cert.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(pem)
        ctx.load_cert_chain(path)


def server_context(chain_pem: bytes, key_pem: bytes, protocols: tuple[str, ...], ciphers: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = min((_VERSIONS[p] for p in protocols), default=ssl.TLSVersion.TLSv1_2)
    ctx.maximum_version = max((_VERSIONS[p] for p in protocols), default=ssl.TLSVersion.TLSv1_3)
    ctx.options |= ssl.OP_NO_COMPRESSION  # CRIME
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        log.error("ssl-ciphers %r: OpenSSL knows none of these ciphers; keeping its defaults", ciphers)
    ctx.set_alpn_protocols(list(ALPN_OFFER))
    share_ticket_keys(ctx, TICKET_KEYS)  # session tickets stay on (OP_NO_TICKET unset), with the start's keys
    load_chain(ctx, chain_pem, key_pem)
    return ctx


class TLSServing:
    """The contexts of one install: SNI name -> context, the default, and the passthrough hosts."""

    __slots__ = ("default", "exact", "passthrough")

    def __init__(self, default: ssl.SSLContext, exact: Mapping[str, ssl.SSLContext],
                 passthrough: Mapping[str, Route]) -> None:
        self.default = default
        self.exact = exact  # names and "*.parent" wildcards
        self.passthrough = passthrough

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        exact = self.exact
        ctx = exact.get(name) or exact.get("*." + name.partition(".")[2])
        return ctx if ctx is not None else self.default

    def passthrough_route(self, server_name: str | None) -> Route | None:
        if not server_name or not self.passthrough:
            return None
        route = self.passthrough.get(server_name)
        return route if route is not None else self.passthrough.get("*." + server_name.partition(".")[2])

    def on_sni(self, ssl_object: ssl.SSLObject, server_name: str | None, current: ssl.SSLContext) -> None:
        """The default context's sni_callback: switch the handshake to the chosen certificate."""
        chosen = self.context_for(server_name)
        if chosen is not current:
            ssl_object.context = chosen


class TLSContexts:
    """Builds a TLSServing per install, reusing the contexts of unchanged certificates (live state)."""

    def __init__(self, fake_chain_pem: bytes, fake_key_pem: bytes) -> None:
        self._fake = (fake_chain_pem, fake_key_pem)
        self._cache: dict[tuple[Any, ...], ssl.SSLContext] = {}

    def build(self, snapshot: Snapshot) -> TLSServing:
        tls, settings = snapshot.tls, snapshot.settings
        cache: dict[tuple[Any, ...], ssl.SSLContext] = {}
        by_secret: dict[str, ssl.SSLContext] = {}
        for key, cert in tls.certificates.items():
            ctx = self._context(cert.chain_pem, cert.key_pem, settings, cache, cert)
            if ctx is not None:
                by_secret[key] = ctx
        default = by_secret.get(tls.default) or self._context(*self._fake, settings, cache, None)
        assert default is not None  # our own certificate: OpenSSL takes it
        self._cache = cache  # contexts of certificates no longer served are dropped
        exact = {name: by_secret[secret] for name, secret in tls.hosts.items() if secret in by_secret}
        serving = TLSServing(default, MappingProxyType(exact), tls.passthrough)
        default.sni_callback = serving.on_sni
        return serving

    def _context(self, chain: bytes, key: bytes, settings: ProxySettings,
                 cache: dict[tuple[Any, ...], ssl.SSLContext], cert: Certificate | None) -> ssl.SSLContext | None:
        ident = (chain, key, settings.ssl_protocols, settings.ssl_ciphers)
        ctx = cache.get(ident) or self._cache.get(ident)
        if ctx is None:
            try:
                ctx = server_context(chain, key, settings.ssl_protocols, settings.ssl_ciphers)
            except ssl.SSLError as exc:  # parsed fine, but OpenSSL refuses it (a key too weak for its level)
                log.error("Secret %s: OpenSSL refuses the certificate (%s): its hosts get the default certificate",
                          cert.secret if cert else "(generated)", exc.reason or exc)
                return None
        cache[ident] = ctx
        return ctx


@functools.lru_cache(maxsize=256)
def upstream_context(spec: UpstreamTLS) -> ssl.SSLContext:
    """The client context for backend-protocol HTTPS, once per spec (the pool asks on every new connection)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if spec.verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = bool(spec.verify_name)
        if spec.ca_pem:
            ctx.load_verify_locations(cadata=spec.ca_pem.decode("ascii", "replace"))
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # proxy-ssl-verify off (ingress-nginx's default): encrypted, not verified
    if spec.protocols:  # proxy-ssl-protocols
        ctx.minimum_version = min(_VERSIONS[p] for p in spec.protocols)
        ctx.maximum_version = max(_VERSIONS[p] for p in spec.protocols)
    if spec.ciphers:  # proxy-ssl-ciphers: judged by config (OpenSSL selects some); keep the defaults otherwise
        with contextlib.suppress(ssl.SSLError):
            ctx.set_ciphers(spec.ciphers)
    if spec.verify:
        set_verify_depth(ctx, spec.verify_depth)
    if spec.client_chain_pem and spec.client_key_pem:
        with contextlib.suppress(ssl.SSLError):  # validated by config; OpenSSL may still refuse a weak key
            load_chain(ctx, spec.client_chain_pem, spec.client_key_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def set_verify_depth(ctx: ssl.SSLContext, depth: int) -> bool:
    """SSL_CTX_set_verify_depth, which Python's ssl module does not expose (proxy-ssl-verify-depth).
    False (and a warning) when it cannot be set; OpenSSL's default depth (100) applies then."""
    pointer = _ssl_ctx(ctx)
    if pointer is None or _libssl is None:
        log.warning("proxy-ssl-verify-depth cannot be set on this Python; OpenSSL's default applies")
        return False
    _libssl.set_verify_depth(pointer, depth)
    return True


def share_ticket_keys(ctx: ssl.SSLContext, keys: bytes) -> bool:
    """SSL_CTX_set_tlsext_ticket_keys (a ctrl), which Python does not expose: see `TICKET_KEYS`. False (and
    a debug line) when it cannot be set: the context keeps OpenSSL's own keys, resumption per worker only."""
    pointer = _ssl_ctx(ctx)
    if pointer is None or _libssl is None or len(keys) != 80:
        log.debug("TLS ticket keys not shared between workers (not CPython/OpenSSL as expected)")
        return False
    return bool(_libssl.ctrl(pointer, _SET_TICKET_KEYS, len(keys), ctypes.create_string_buffer(keys, len(keys))))


class _LibSSL:
    """The three libssl entry points we need, reached through the `_ssl` extension's own link (so they are
    the very OpenSSL that made the context)."""

    def __init__(self) -> None:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        self.get_verify_depth = lib.SSL_CTX_get_verify_depth
        self.get_verify_depth.argtypes, self.get_verify_depth.restype = [ctypes.c_void_p], ctypes.c_int
        self.set_verify_depth = lib.SSL_CTX_set_verify_depth
        self.set_verify_depth.argtypes, self.set_verify_depth.restype = [ctypes.c_void_p, ctypes.c_int], None
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long


def _load_libssl() -> _LibSSL | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        return _LibSSL()
    except (OSError, AttributeError):
        return None


_libssl = _load_libssl()
_SET_TICKET_KEYS = 59  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS


def _ssl_ctx(ctx: ssl.SSLContext) -> int | None:
    """The `SSL_CTX *` of a context we have just made. CPython's SSLContext object holds it right after the
    object header; trusted only when it answers SSL_CTX_get_verify_depth with a fresh context's -1 (OpenSSL's
    "not set"), so call this before setting a depth."""
    if _libssl is None:
        return None
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer or _libssl.get_verify_depth(pointer) != -1:
        return None
    return int(pointer)


def upstream_server_hostname(spec: UpstreamTLS) -> str:
    """What create_connection gets as server_hostname: the SNI sent, and the name checked when verifying
    (Python checks only the name it sends, so verifying sends it); "" sends no SNI."""
    return spec.verify_name if spec.verify else spec.server_name
