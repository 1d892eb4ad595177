"""backend-protocol: HTTPS / GRPCS -> `UpstreamTLS` per (Ingress, Service) (issue 4). Pure: `now` passed in.

ingress-nginx's annotations: `proxy-ssl-verify` (off), `proxy-ssl-secret` (`ca.crt` to verify with, and
optionally `tls.crt`/`tls.key` as a client certificate), `proxy-ssl-name` (default `<service>.<namespace>.svc`),
`proxy-ssl-server-name` (off), `proxy-ssl-protocols` (old versions dropped with a warning, as `ssl-protocols`),
`proxy-ssl-ciphers` (an OpenSSL cipher string), `proxy-ssl-verify-depth` (1, nginx's default). A bad value
is an error on the annotation and that setting keeps its default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cryptography import x509

from pyngress.config.annotations import Annotations
from pyngress.config.tls_secrets import (
    CA_KEY,
    CERT_KEY,
    CertificateError,
    flag,
    on_ingress,
    on_secret,
    parse_certificate,
)
from pyngress.config.tls_values import (
    parse_ssl_ciphers,
    parse_ssl_protocols,
    parse_verify_depth,
    ssl_protocol_warnings,
)
from pyngress.model import Ingress, Problem, Secret, UpstreamTLS

BACKEND_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS", "AUTO_HTTP", "FCGI")  # ingress-nginx's values
TLS_TO_POD = ("HTTPS", "GRPCS")


class UpstreamTLSReader:
    """Reads the backend TLS annotations; appends its Problems to `problems` (the TLS compiler's list)."""

    def __init__(self, secrets: Mapping[tuple[str, str], Secret], now: float | None,
                 problems: list[Problem]) -> None:
        self._secrets = secrets
        self._now = now
        self.problems = problems
        self._specs: dict[str, UpstreamTLS | None] = {}  # Ingress key + service -> spec

    def get(self, ingress: Ingress, service: str) -> UpstreamTLS | None:
        """The spec for `service` of `ingress`, read once per pair (problems reported once)."""
        key = f"{ingress.meta.key}#{service}"
        if key not in self._specs:
            self._specs[key] = self._read(ingress, service)
        return self._specs[key]

    def _read(self, ingress: Ingress, service: str) -> UpstreamTLS | None:
        notes = Annotations(ingress)
        protocol = notes.parsed("backend-protocol", "HTTP", _backend_protocol)
        if protocol not in TLS_TO_POD:
            self._once(notes.problems)
            return None
        verify = flag(notes, "proxy-ssl-verify", False)
        sni = flag(notes, "proxy-ssl-server-name", False)
        name = notes.parsed("proxy-ssl-name", "", lambda v: v.strip().lower())
        secret_ref = notes.parsed("proxy-ssl-secret", "", _namespaced(ingress.meta.namespace))
        ca, chain, key = b"", b"", b""
        if secret_ref:
            ca, chain, key = self._proxy_secret(ingress, notes, secret_ref)
        ciphers = notes.parsed("proxy-ssl-ciphers", "", parse_ssl_ciphers)
        protocols = notes.parsed("proxy-ssl-protocols", "", lambda v: " ".join(parse_ssl_protocols(v)))
        depth = notes.parsed("proxy-ssl-verify-depth", "1", lambda v: str(parse_verify_depth(v)))
        found = notes.get("proxy-ssl-protocols")  # TLSv1/TLSv1.1 dropped: a warning, as for the ConfigMap key
        if found is not None:
            notes.problems += [on_ingress(ingress, f"metadata.annotations[{found[0]}]", message, "warning")
                               for message in ssl_protocol_warnings(found[1])]
        self._once(notes.problems)
        name = name or f"{service}.{ingress.meta.namespace}.svc"
        return UpstreamTLS(verify=verify, ca_pem=ca, client_chain_pem=chain, client_key_pem=key,
                           server_name=name if sni else "", verify_name=name, secret=secret_ref,
                           protocols=tuple(protocols.split()), ciphers=ciphers, verify_depth=int(depth))

    def _proxy_secret(self, ingress: Ingress, notes: Annotations, ref: str) -> tuple[bytes, bytes, bytes]:
        namespace, _, name = ref.partition("/")
        secret = self._secrets.get((namespace, name))
        found = notes.get("proxy-ssl-secret")
        at = f"metadata.annotations[{found[0] if found else 'proxy-ssl-secret'}]"
        if secret is None:
            self.problems.append(on_ingress(ingress, at, f"Secret {ref} not found: pods are verified "
                                             "against the system's trusted CAs"))
            return b"", b"", b""
        ca = secret.data.get(CA_KEY, b"")
        if ca:
            try:
                x509.load_pem_x509_certificates(ca)
            except ValueError:
                self.problems.append(on_secret(secret, "data.ca.crt", "not a PEM certificate"))
                ca = b""
        chain, key = b"", b""
        if CERT_KEY in secret.data:
            try:
                cert = parse_certificate(secret, self._now)
                chain, key = cert.chain_pem, cert.key_pem
            except CertificateError as exc:
                self.problems.append(on_secret(secret, "data.tls.crt", f"{exc}: no client certificate is sent"))
        return ca, chain, key

    def _once(self, problems: list[Problem]) -> None:
        self.problems += [p for p in problems if p not in self.problems]


def _backend_protocol(value: str) -> str:
    upper = value.strip().upper()
    if upper not in BACKEND_PROTOCOLS:
        raise ValueError(f"{value!r} is not one of {', '.join(BACKEND_PROTOCOLS)}")
    return upper


def _namespaced(namespace: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        ref = value.strip()
        ns, _, name = ref.rpartition("/")
        if not name:
            raise ValueError(f"{value!r} is not a Secret (namespace/name)")
        return f"{ns or namespace}/{name}"

    return parse
