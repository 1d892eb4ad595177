"""Parsers for the TLS values of the ConfigMap and the annotations (issue 4). Pure; ValueError says why.

- `ssl-protocols`: nginx's list, space separated ("TLSv1.2 TLSv1.3"). Only TLSv1.2 and TLSv1.3 are served.
  The older names nginx accepts (SSLv2, SSLv3, TLSv1, TLSv1.1) are *dropped with a warning*, not refused: the
  ingress-nginx docs long suggested "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3", and such a ConfigMap must keep working
  (`ssl_protocol_warnings`). TLS 1.0/1.1 are deprecated (RFC 8996) and OpenSSL 3 refuses them at its default
  security level anyway, so serving them would be a promise the listener cannot keep. A name nginx itself
  does not know ("TLSv1.4") is an error and the default is kept; a list of old versions only is a warning
  and the default (TLSv1.2 TLSv1.3) is served.
- `ssl-ciphers` / `proxy-ssl-ciphers`: an OpenSSL cipher string, passed to `SSLContext.set_ciphers` as is
  ("HIGH:!aNULL:!MD5" works). OpenSSL skips names it does not know and fails only when nothing is left; that
  is judged here, so `pyngress check` reports it (an error, and the default is kept). The ssl module is used
  as a pure function (no socket, no clock): only this OpenSSL can say what it accepts.
"""

from __future__ import annotations

import re
import ssl

PROTOCOLS = ("TLSv1.2", "TLSv1.3")
INSECURE = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")  # nginx knows them; we drop them with a warning
_CIPHER_STRING = re.compile(r"[A-Za-z0-9_+!@=.:,\- ]+")


def _split_protocols(text: str) -> tuple[list[str], list[str], list[str]]:
    """(served, dropped, unknown) names of an ssl-protocols value, in the user's spelling."""
    served, dropped, unknown = [], [], []
    for name in text.split():
        lower = name.lower()
        if lower in (p.lower() for p in PROTOCOLS):
            served.append(next(p for p in PROTOCOLS if p.lower() == lower))
        elif lower in (p.lower() for p in INSECURE):
            dropped.append(name)
        else:
            unknown.append(name)
    return served, dropped, unknown


def parse_ssl_protocols(text: str) -> tuple[str, ...]:
    served, _, unknown = _split_protocols(text)
    if unknown:
        raise ValueError(f"{' '.join(unknown)}: not a TLS version nginx knows "
                         f"(the ones served are {' '.join(PROTOCOLS)})")
    if not served:  # old versions only (a warning says so), or nothing: the default
        return PROTOCOLS
    return tuple(p for p in PROTOCOLS if p in served)


def ssl_protocol_warnings(text: str) -> list[str]:
    """The warnings for an ssl-protocols value `parse_ssl_protocols` accepted: the versions it drops."""
    served, dropped, unknown = _split_protocols(text)
    if not dropped or unknown:
        return []  # nothing dropped, or the value is an error already
    serving = " ".join(p for p in PROTOCOLS if p in served or not served)
    return [f"{' '.join(dropped)} ignored: only {' '.join(PROTOCOLS)} are served (older versions are "
            f"deprecated, RFC 8996); serving {serving}"]


def parse_ssl_ciphers(text: str) -> str:
    value = text.strip()
    if not value or not _CIPHER_STRING.fullmatch(value):
        raise ValueError(f"{text!r} is not an OpenSSL cipher list (as ECDHE-RSA-AES128-GCM-SHA256:...)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(value)
    except ssl.SSLError:
        raise ValueError(f"OpenSSL selects no cipher from {value!r} (it skips names it does not know)") from None
    return value


def parse_max_age(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a whole number of seconds")
    return int(text)


def parse_verify_depth(text: str) -> int:
    """proxy-ssl-verify-depth: how many intermediate certificates may sit between the pod's and the CA."""
    if not (text.strip().isascii() and text.strip().isdigit()) or not 0 <= int(text) <= 100:
        raise ValueError(f"{text!r} is not a depth from 0 to 100")
    return int(text)
