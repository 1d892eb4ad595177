"""The TLS part of `pyngress check` (issue 4): which certificate each TLS host gets, passthrough, the default.

Shown only when some served Ingress uses TLS (or a default certificate is configured), so the output for
configurations without TLS is unchanged:

    TLS HOST          CERTIFICATE       EXPIRES (UTC)
    shop.example.com  shop/shop-tls     2027-11-29
    api.example.com   (default)         -
    ssl-passthrough: secure.example.com -> secure:443
    default certificate: generated self-signed (no --default-ssl-certificate)

A host whose Secret is missing or invalid shows "(default)": the problem that says why is listed below.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyngress.model import TLSConfig

HEADER = ("TLS HOST", "CERTIFICATE", "EXPIRES (UTC)")


def tls_lines(tls: TLSConfig) -> list[str]:
    hosts = sorted(set(tls.tls_hosts) | set(tls.hosts))
    if not hosts and not tls.passthrough and not tls.default:
        return []
    lines = _table(tls, hosts) if hosts else []
    lines += [f"ssl-passthrough: {host} -> {route.backend.service}:{route.backend.port}"
              for host, route in tls.passthrough.items()]
    lines.append("default certificate: " + (f"{tls.default} ({_expires(tls, tls.default)})" if tls.default
                                            else "generated self-signed (no --default-ssl-certificate)"))
    return ["", *lines]


def _table(tls: TLSConfig, hosts: list[str]) -> list[str]:
    rows = [HEADER] + [(h, tls.hosts.get(h, "(default)"), _expires(tls, tls.hosts.get(h, ""))) for h in hosts]
    widths = [max(len(row[col]) for row in rows) for col in range(len(HEADER) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]


def _expires(tls: TLSConfig, secret: str) -> str:
    cert = tls.certificates.get(secret)
    return "-" if cert is None else datetime.fromtimestamp(cert.not_after, UTC).strftime("%Y-%m-%d")
