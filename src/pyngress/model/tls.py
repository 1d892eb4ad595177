"""The compiled TLS configuration (issue 4): certificates, which SNI name gets which, redirects, backend TLS.

All frozen and hashable; built by `config.tls` from Ingress `spec.tls`, Secrets, annotations and the
ConfigMap, carried in `Snapshot.tls` and per route (`Route.https`, `Route.upstream_tls`). The runtime turns it
into `ssl.SSLContext` objects once per certificate per install (`runtime.tls_contexts`); nothing here touches
the ssl module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyngress.model.snapshot import Route


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate chain and its key from one Secret, already checked (parses, key matches, not expired)."""

    secret: str  # "namespace/name" of the Secret
    chain_pem: bytes  # tls.crt as given: leaf first, then intermediates
    key_pem: bytes  # tls.key
    names: tuple[str, ...]  # the DNS names it covers (subjectAltName, else the CN), lower case
    not_after: float  # epoch seconds
    fingerprint: str  # SHA-256 of the leaf (hex): what check shows, and the identity of its SSLContext


@dataclass(frozen=True, slots=True)
class HttpsPolicy:
    """What a route does about HTTPS, decided at compile time so the hot path does one attribute test.

    A route with neither a redirect nor HSTS has `Route.https = None`.
    """

    redirect: bool  # plain HTTP gets 308 to https:// (ssl-redirect on a TLS host, or force-ssl-redirect)
    hsts: bytes  # the whole "Strict-Transport-Security: ...\r\n" line for HTTPS responses, or b""
    # Only on `TLSConfig.unmatched` (requests that match no rule): the policy of each host some rule or
    # spec.tls names, looked up by the request's host (exact, then "*." + parent); other hosts get `others`.
    per_host: Mapping[str, HttpsPolicy] | None = field(default=None, compare=False)
    others: HttpsPolicy | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """backend-protocol: HTTPS: how to re-encrypt to the pods of a route."""

    verify: bool = False  # proxy-ssl-verify
    ca_pem: bytes = b""  # ca.crt of proxy-ssl-secret; empty: the system's trust store (when verifying)
    client_chain_pem: bytes = b""  # tls.crt + tls.key of proxy-ssl-secret, when present: a client certificate
    client_key_pem: bytes = b""
    server_name: str = ""  # SNI sent to the pod ("" sends none): proxy-ssl-name with proxy-ssl-server-name
    verify_name: str = ""  # the name the pod's certificate must carry when verifying
    secret: str = ""  # "namespace/name" of proxy-ssl-secret, for messages
    protocols: tuple[str, ...] = ()  # proxy-ssl-protocols ("TLSv1.2", "TLSv1.3"); (): OpenSSL's (TLS 1.2+)
    ciphers: str = ""  # proxy-ssl-ciphers, an OpenSSL cipher string; "": OpenSSL's defaults
    verify_depth: int = 1  # proxy-ssl-verify-depth: intermediates allowed above the pod's certificate (nginx: 1)
    # Upstream connections are pooled by endpoint key plus this, so a plain and a TLS route to one pod never
    # share a connection.
    pool_suffix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_suffix", f"#tls:{hash(self) & 0xFFFFFFFF:x}")


def _no_routes() -> Mapping[str, Route]:
    return MappingProxyType({})


def _no_certificates() -> Mapping[str, Certificate]:
    return MappingProxyType({})


def _no_hosts() -> Mapping[str, str]:
    return MappingProxyType({})


DEFAULT_SSL_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
# ingress-nginx's default ssl-ciphers (TLS 1.2 suites; TLS 1.3 suites are OpenSSL's defaults)
DEFAULT_SSL_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """What the HTTPS listener serves. SNI lookup: exact name, then "*." + parent (one label), then default."""

    certificates: Mapping[str, Certificate] = field(default_factory=_no_certificates)  # by Secret key
    hosts: Mapping[str, str] = field(default_factory=_no_hosts)  # SNI name or "*.parent" -> Secret key
    default: str = ""  # Secret key of --default-ssl-certificate when valid; "": the generated fake certificate
    passthrough: Mapping[str, Route] = field(default_factory=_no_routes)  # host -> route (ssl-passthrough)
    tls_hosts: tuple[str, ...] = ()  # every host listed in a served spec.tls, valid certificate or not
    # Redirect/HSTS for requests that match no rule (default backend or our 404), as ingress-nginx's per-host
    # default location; None when no host redirects and HSTS is off.
    unmatched: HttpsPolicy | None = None


NO_TLS = TLSConfig()
