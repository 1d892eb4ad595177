"""Secrets and annotation helpers shared by `config.tls` and `config.tls_upstream` (issue 4). Pure.

`parse_certificate` checks one Secret's `tls.crt` / `tls.key`: the chain parses, the key parses (unencrypted
PEM) and belongs to the leaf, and the leaf has not expired at `now`. `flag` reads an on/off annotation in
nginx's spelling too; `on_ingress` / `on_secret` make the Problems.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pyngress.config.annotations import Annotations
from pyngress.config.settings import parse_bool
from pyngress.model import Certificate, Ingress, Problem, Secret

CERT_KEY, KEY_KEY, CA_KEY = "tls.crt", "tls.key", "ca.crt"


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


def flag(notes: Annotations, name: str, default: bool) -> bool:
    value = notes.parsed(name, "true" if default else "false", bool_text)
    return value == "true"


def bool_text(value: str) -> str:
    lowered = value.strip().lower()
    if lowered in ("on", "off"):  # nginx's spelling (proxy-ssl-verify: "on")
        return "true" if lowered == "on" else "false"
    return "true" if parse_bool(value) else "false"


def on_ingress(ingress: Ingress, at: str, message: str, severity: str = "error") -> Problem:
    meta = ingress.meta
    return Problem("Ingress", meta.namespace, meta.name, at, message, meta.source, severity)


def on_secret(secret: Secret, at: str, message: str) -> Problem:
    meta = secret.meta
    return Problem("Secret", meta.namespace, meta.name, at, message, meta.source)
