"""Ingress `spec.tls` + Secrets + annotations -> the TLS part of a Snapshot (issue 4). Pure: `now` is passed in.

Certificates. Each `spec.tls` entry names a Secret (`secretName`) in the Ingress's namespace, holding
`tls.crt` (PEM chain, leaf first) and `tls.key` (PEM, unencrypted). Every Secret referenced is checked once
(`parse_certificate`): the chain must parse, the key must parse and belong to the leaf, and the leaf must not
have expired at `now`. A Secret that fails is one error Problem *on the Secret*, listing the hosts that fall
back to the default certificate; nothing else is affected. A missing Secret is an error on the Ingress field.

Which name gets which certificate (the SNI table), as ingress-nginx builds it:
- each host listed in an entry's `hosts` gets that entry's certificate, if the certificate covers the name
  (subjectAltName, or the CN when there is none); one that does not is a warning and the host keeps the
  default certificate (ingress-nginx skips such a certificate too);
- a rule host the Ingress lists in no entry gets the certificate of one of its entries that covers it;
- the oldest Ingress wins a host that two Ingresses give different Secrets (a warning on the newer).
The default certificate is `--default-ssl-certificate namespace/name` when it is valid, else the runtime's
generated self-signed one (ingress-nginx's "Fake Certificate").

HTTPS policy per route (`HttpsPolicy`, None when there is nothing to do): `redirect` when the route's host is a
TLS host (listed in some served `spec.tls`, whatever its certificate's state) and `ssl-redirect` is on (the
Ingress's annotation, else the ConfigMap's; default true), or when `force-ssl-redirect` is on; the HSTS line
(ConfigMap `hsts`, `hsts-max-age`, `hsts-include-subdomains`, `hsts-preload`) is sent on HTTPS responses.

`ssl-passthrough: "true"` gives the Ingress's rule hosts to the HTTPS listener as raw TLS relays to the host's
backend (the route of its shortest path). `backend-protocol: HTTPS` re-encrypts to the pods (`UpstreamTLS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pyngress.config.annotations import Annotations
from pyngress.config.settings import parse_bool
from pyngress.model import (
    Certificate,
    HttpsPolicy,
    Ingress,
    Problem,
    ProxySettings,
    Route,
    Secret,
    TLSConfig,
    UpstreamTLS,
)

CERT_KEY, KEY_KEY, CA_KEY = "tls.crt", "tls.key", "ca.crt"
BACKEND_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS", "AUTO_HTTP", "FCGI")  # ingress-nginx's values
TLS_TO_POD = ("HTTPS", "GRPCS")


class CertificateError(ValueError):
    """Why a Secret's certificate cannot be served: the Secret's field at fault and a message for the user."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_certificate(secret: Secret, now: float | None) -> Certificate:
    """The Secret's certificate, checked. Raises CertificateError. `now` None skips the expiry check."""
    chain_pem, key_pem = secret.data.get(CERT_KEY), secret.data.get(KEY_KEY)
    if not chain_pem or not key_pem:
        raise CertificateError("data", f"no {CERT_KEY} and {KEY_KEY} in data: not a TLS Secret")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CertificateError("data.tls.crt", f"{CERT_KEY} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError("data.tls.key", f"{KEY_KEY} is not an unencrypted PEM private key") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise CertificateError("data.tls.key", f"{KEY_KEY} does not belong to the certificate in {CERT_KEY}")
    not_after = leaf.not_valid_after_utc.timestamp()
    if now is not None and not_after < now:
        raise CertificateError("data.tls.crt",
                               f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return Certificate(secret.meta.key, chain_pem, key_pem, certificate_names(leaf), not_after,
                       hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest())


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names of the subjectAltName, else the common name (as browsers did before SANs)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(dict.fromkeys(names))


def covers(names: Iterable[str], host: str) -> bool:
    """Does a certificate for `names` serve `host`? A "*." name covers exactly one label (RFC 6125 6.4.3)."""
    parent = host.partition(".")[2]
    return any(n == host or (n.startswith("*.") and n[2:] == parent and parent) for n in names)


def hsts_line(settings: ProxySettings) -> bytes:
    if not settings.hsts:
        return b""
    value = f"max-age={settings.hsts_max_age}"
    value += "; includeSubDomains" if settings.hsts_include_subdomains else ""
    value += "; preload" if settings.hsts_preload else ""
    return f"Strict-Transport-Security: {value}\r\n".encode()


@dataclass(slots=True)
class _Reference:
    """Where a Secret is used: the first (Ingress, entry index), and every host it was meant for."""

    ingress: Ingress
    entry: int
    hosts: list[str] = field(default_factory=list)


class TLSCompiler:
    """Used by `config.compile`: `add_ingresses` first (all served, oldest first), then per route
    `https_policy` / `upstream_tls`, then `finish(routes)` for the TLSConfig."""

    def __init__(self, secrets: Mapping[tuple[str, str], Secret], settings: ProxySettings,
                 default_certificate: str, now: float | None) -> None:
        self._secrets = secrets
        self._settings = settings
        self._now = now
        self._hsts = hsts_line(settings)
        self.problems: list[Problem] = []
        self.certificates: dict[str, Certificate] = {}
        self.hosts: dict[str, str] = {}  # SNI name -> Secret key
        self._host_owner: dict[str, str] = {}  # SNI name -> Ingress key that set it
        self.tls_hosts: set[str] = set()
        self._redirect: dict[str, tuple[bool, bool]] = {}  # Ingress key -> (ssl-redirect, force-ssl-redirect)
        self._passthrough: set[str] = set()  # Ingress keys with ssl-passthrough
        self._upstream: dict[str, UpstreamTLS | None] = {}  # Ingress key + service -> spec
        self.default = self._default_certificate(default_certificate)

    # -- certificates -----------------------------------------------------------------------------------

    def add_ingresses(self, ingresses: Sequence[Ingress]) -> None:
        refs: dict[str, _Reference] = {}
        for ingress in ingresses:
            self._read_annotations(ingress)
            for i, entry in enumerate(ingress.tls):
                self.tls_hosts.update(h.lower() for h in entry.hosts)
                if entry.secret_name:
                    key = f"{ingress.meta.namespace}/{entry.secret_name}"
                    refs.setdefault(key, _Reference(ingress, i)).hosts += [h.lower() for h in entry.hosts]
        for key, ref in refs.items():
            self._load(key, ref)
        for ingress in ingresses:
            self._assign_hosts(ingress)

    def _load(self, key: str, ref: _Reference) -> None:
        namespace, _, name = key.partition("/")
        secret = self._secrets.get((namespace, name))
        fallback = _fallback(ref.hosts)
        if secret is None:
            self.problems.append(_on_ingress(ref.ingress, f"spec.tls[{ref.entry}].secretName",
                                             f"Secret {key} not found{fallback}"))
            return
        try:
            self.certificates[key] = parse_certificate(secret, self._now)
        except CertificateError as exc:
            self.problems.append(_on_secret(secret, exc.field, f"{exc}{fallback}"))

    def _assign_hosts(self, ingress: Ingress) -> None:
        listed: set[str] = set()
        for i, entry in enumerate(ingress.tls):
            cert = self.certificates.get(f"{ingress.meta.namespace}/{entry.secret_name}")
            for k, host in enumerate(h.lower() for h in entry.hosts):
                listed.add(host)
                if cert is None:
                    continue  # reported with the Secret
                if not covers(cert.names, host) and host not in cert.names:
                    self.problems.append(_on_ingress(
                        ingress, f"spec.tls[{i}].hosts[{k}]", f"the certificate in Secret {cert.secret} is "
                        f"not for {host} (it names {', '.join(cert.names) or 'nothing'}): {host} gets the "
                        "default certificate", "warning"))
                    continue
                self._give(ingress, f"spec.tls[{i}].hosts[{k}]", host, cert)
        for rule in ingress.rules:  # hosts of the rules that no entry lists: an entry whose certificate fits
            host = rule.host.lower()
            if not host or host in listed:
                continue
            for entry in ingress.tls:
                cert = self.certificates.get(f"{ingress.meta.namespace}/{entry.secret_name}")
                if cert is not None and covers(cert.names, host):
                    self.tls_hosts.add(host)
                    self._give(ingress, "spec.tls", host, cert)
                    break

    def _give(self, ingress: Ingress, at: str, host: str, cert: Certificate) -> None:
        current = self.hosts.get(host)
        if current is not None and current != cert.secret:
            self.problems.append(_on_ingress(ingress, at, f"{host} already has the certificate of Secret "
                                             f"{current} from the older Ingress {self._host_owner[host]}: "
                                             "this one is ignored for it", "warning"))
            return
        self.hosts[host] = cert.secret
        self._host_owner.setdefault(host, ingress.meta.key)

    def _default_certificate(self, wanted: str) -> str:
        if not wanted:
            return ""
        namespace, _, name = wanted.rpartition("/")
        secret = self._secrets.get((namespace or "default", name))
        if secret is None:
            self.problems.append(Problem("Secret", namespace or "default", name, "",
                                         "not found (--default-ssl-certificate): the generated self-signed "
                                         "certificate is the default"))
            return ""
        try:
            cert = parse_certificate(secret, self._now)
        except CertificateError as exc:
            self.problems.append(_on_secret(secret, exc.field, f"{exc}: the generated self-signed certificate is "
                                            "the default (--default-ssl-certificate)"))
            return ""
        self.certificates[cert.secret] = cert
        return cert.secret

    # -- per Ingress annotations -------------------------------------------------------------------------

    def _read_annotations(self, ingress: Ingress) -> None:
        notes = Annotations(ingress)
        s = self._settings
        redirect = _flag(notes, "ssl-redirect", s.ssl_redirect)
        force = _flag(notes, "force-ssl-redirect", s.force_ssl_redirect)
        self._redirect[ingress.meta.key] = (redirect, force)
        if _flag(notes, "ssl-passthrough", False):
            self._passthrough.add(ingress.meta.key)
        self.problems += notes.problems

    def https_policy(self, ingress: Ingress, host: str) -> HttpsPolicy | None:
        redirect, force = self._redirect.get(ingress.meta.key, (False, False))
        policy = HttpsPolicy(redirect=force or (redirect and host in self.tls_hosts), hsts=self._hsts)
        return policy if policy.redirect or policy.hsts else None

    def upstream_tls(self, ingress: Ingress, service: str) -> UpstreamTLS | None:
        key = f"{ingress.meta.key}#{service}"
        if key not in self._upstream:
            self._upstream[key] = self._read_upstream(ingress, service)
        return self._upstream[key]

    def _read_upstream(self, ingress: Ingress, service: str) -> UpstreamTLS | None:
        notes = Annotations(ingress)
        protocol = notes.parsed("backend-protocol", "HTTP", _backend_protocol)
        if protocol not in TLS_TO_POD:
            self._once(notes.problems)
            return None
        verify = _flag(notes, "proxy-ssl-verify", False)
        sni = _flag(notes, "proxy-ssl-server-name", False)
        name = notes.parsed("proxy-ssl-name", "", lambda v: v.strip().lower())
        secret_ref = notes.parsed("proxy-ssl-secret", "", _namespaced(ingress.meta.namespace))
        ca, chain, key = b"", b"", b""
        if secret_ref:
            ca, chain, key = self._proxy_secret(ingress, notes, secret_ref)
        self._once(notes.problems)
        name = name or f"{service}.{ingress.meta.namespace}.svc"
        return UpstreamTLS(verify=verify, ca_pem=ca, client_chain_pem=chain, client_key_pem=key,
                           server_name=name if sni else "", verify_name=name, secret=secret_ref)

    def _proxy_secret(self, ingress: Ingress, notes: Annotations, ref: str) -> tuple[bytes, bytes, bytes]:
        namespace, _, name = ref.partition("/")
        secret = self._secrets.get((namespace, name))
        found = notes.get("proxy-ssl-secret")
        at = f"metadata.annotations[{found[0] if found else 'proxy-ssl-secret'}]"
        if secret is None:
            self.problems.append(_on_ingress(ingress, at, f"Secret {ref} not found: pods are verified "
                                             "against the system's trusted CAs"))
            return b"", b"", b""
        ca = secret.data.get(CA_KEY, b"")
        if ca:
            try:
                x509.load_pem_x509_certificates(ca)
            except ValueError:
                self.problems.append(_on_secret(secret, "data.ca.crt", "not a PEM certificate"))
                ca = b""
        chain, key = b"", b""
        if CERT_KEY in secret.data:
            try:
                cert = parse_certificate(secret, self._now)
                chain, key = cert.chain_pem, cert.key_pem
            except CertificateError as exc:
                self.problems.append(_on_secret(secret, "data.tls.crt", f"{exc}: no client certificate is sent"))
        return ca, chain, key

    def _once(self, problems: list[Problem]) -> None:
        self.problems += [p for p in problems if p not in self.problems]

    # -- the result -------------------------------------------------------------------------------------

    def finish(self, routes: Iterable[Route]) -> TLSConfig:
        passthrough: dict[str, Route] = {}
        for route in sorted(routes, key=lambda r: len(r.path)):
            if route.host and route.ingress in self._passthrough:
                passthrough.setdefault(route.host, route)
        used = set(self.hosts.values()) | {self.default} - {""}
        return TLSConfig(
            certificates=MappingProxyType({k: v for k, v in sorted(self.certificates.items()) if k in used}),
            hosts=MappingProxyType(dict(sorted(self.hosts.items()))),
            default=self.default,
            passthrough=MappingProxyType(dict(sorted(passthrough.items()))),
            tls_hosts=tuple(sorted(self.tls_hosts)),
        )


def _flag(notes: Annotations, name: str, default: bool) -> bool:
    value = notes.parsed(name, "true" if default else "false", _bool_text)
    return value == "true"


def _bool_text(value: str) -> str:
    lowered = value.strip().lower()
    if lowered in ("on", "off"):  # nginx's spelling (proxy-ssl-verify: "on")
        return "true" if lowered == "on" else "false"
    return "true" if parse_bool(value) else "false"


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


def _fallback(hosts: Sequence[str]) -> str:
    if not hosts:
        return ""
    return f": {', '.join(dict.fromkeys(hosts))} get{'s' if len(set(hosts)) == 1 else ''} the default certificate"


def _on_ingress(ingress: Ingress, at: str, message: str, severity: str = "error") -> Problem:
    meta = ingress.meta
    return Problem("Ingress", meta.namespace, meta.name, at, message, meta.source, severity)


def _on_secret(secret: Secret, at: str, message: str) -> Problem:
    meta = secret.meta
    return Problem("Secret", meta.namespace, meta.name, at, message, meta.source)
