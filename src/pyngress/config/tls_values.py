"""Parsers for the TLS values of the ConfigMap and the annotations (issue 4). Pure; ValueError says why.

- `ssl-protocols`: nginx's list, space separated ("TLSv1.2 TLSv1.3"). Only TLSv1.2 and TLSv1.3 are accepted:
  TLS 1.0 and 1.1 are deprecated (RFC 8996) and the OpenSSL builds we run on refuse them at security level
  2 anyway, so accepting them would be a promise the listener cannot keep.
- `ssl-ciphers`: an OpenSSL cipher string. Checked for its shape here; whether OpenSSL knows the suites is
  only known when the listener builds its contexts (the runtime logs an error and keeps the default then).
"""

from __future__ import annotations

import re

PROTOCOLS = ("TLSv1.2", "TLSv1.3")
_CIPHER_STRING = re.compile(r"[A-Za-z0-9_+!@=.:,\- ]+")


def parse_ssl_protocols(text: str) -> tuple[str, ...]:
    names = text.split()
    by_lower = {p.lower(): p for p in PROTOCOLS}
    unknown = [n for n in names if n.lower() not in by_lower]
    if not names or unknown:
        raise ValueError(f"{text!r} is not a list of TLS versions from {' '.join(PROTOCOLS)}")
    return tuple(p for p in PROTOCOLS if p.lower() in {n.lower() for n in names})


def parse_ssl_ciphers(text: str) -> str:
    value = text.strip()
    if not value or not _CIPHER_STRING.fullmatch(value):
        raise ValueError(f"{text!r} is not an OpenSSL cipher list (as ECDHE-RSA-AES128-GCM-SHA256:...)")
    return value


def parse_max_age(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a whole number of seconds")
    return int(text)
