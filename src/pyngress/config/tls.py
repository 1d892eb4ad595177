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
Requests that match no rule get `TLSConfig.unmatched` (see `_unmatched_policy`): the policy of their host.

`ssl-passthrough: "true"` gives the Ingress's rule hosts to the HTTPS listener as raw TLS relays to the host's
backend (the route of its shortest path). `backend-protocol: HTTPS` re-encrypts to the pods (`UpstreamTLS`,
read by `config.tls_upstream`). Secret parsing and the shared helpers live in `config.tls_secrets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pyngress.config.annotations import Annotations
from pyngress.config.tls_secrets import CertificateError, flag, on_ingress, on_secret, parse_certificate
from pyngress.config.tls_upstream import UpstreamTLSReader
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
        self._upstream = UpstreamTLSReader(secrets, now, self.problems)  # backend-protocol: HTTPS
        self._host_ingress: dict[str, Ingress] = {}  # rule host -> the oldest Ingress with a rule for it
        self.default = self._default_certificate(default_certificate)

    # -- certificates -----------------------------------------------------------------------------------

    def add_ingresses(self, ingresses: Sequence[Ingress]) -> None:
        refs: dict[str, _Reference] = {}
        for ingress in ingresses:
            self._read_annotations(ingress)
            for rule in ingress.rules:
                if rule.host:
                    self._host_ingress.setdefault(rule.host.lower(), ingress)
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
            self.problems.append(on_ingress(ref.ingress, f"spec.tls[{ref.entry}].secretName",
                                             f"Secret {key} not found{fallback}"))
            return
        try:
            self.certificates[key] = parse_certificate(secret, self._now)
        except CertificateError as exc:
            self.problems.append(on_secret(secret, exc.field, f"{exc}{fallback}"))

    def _assign_hosts(self, ingress: Ingress) -> None:
        listed: set[str] = set()
        for i, entry in enumerate(ingress.tls):
            cert = self.certificates.get(f"{ingress.meta.namespace}/{entry.secret_name}")
            for k, host in enumerate(h.lower() for h in entry.hosts):
                listed.add(host)
                if cert is None:
                    continue  # reported with the Secret
                if not covers(cert.names, host) and host not in cert.names:
                    self.problems.append(on_ingress(
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
            self.problems.append(on_ingress(ingress, at, f"{host} already has the certificate of Secret "
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
            self.problems.append(on_secret(secret, exc.field, f"{exc}: the generated self-signed certificate is "
                                            "the default (--default-ssl-certificate)"))
            return ""
        self.certificates[cert.secret] = cert
        return cert.secret

    # -- per Ingress annotations -------------------------------------------------------------------------

    def _read_annotations(self, ingress: Ingress) -> None:
        notes = Annotations(ingress)
        s = self._settings
        redirect = flag(notes, "ssl-redirect", s.ssl_redirect)
        force = flag(notes, "force-ssl-redirect", s.force_ssl_redirect)
        self._redirect[ingress.meta.key] = (redirect, force)
        if flag(notes, "ssl-passthrough", False):
            self._passthrough.add(ingress.meta.key)
        self.problems += notes.problems

    def https_policy(self, ingress: Ingress, host: str) -> HttpsPolicy | None:
        redirect, force = self._redirect.get(ingress.meta.key, (False, False))
        policy = HttpsPolicy(redirect=force or (redirect and host in self.tls_hosts), hsts=self._hsts)
        return policy if policy.redirect or policy.hsts else None

    def upstream_tls(self, ingress: Ingress, service: str) -> UpstreamTLS | None:
        return self._upstream.get(ingress, service)

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
            unmatched=self._unmatched_policy(),
        )

    def _unmatched_policy(self) -> HttpsPolicy | None:
        """Requests that match no rule, as ingress-nginx's per-host default location `/`: a host with rules
        takes the annotations of its oldest Ingress (ingress-nginx applies them to that location), a TLS host
        without rules the ConfigMap's ssl-redirect; any other host only the ConfigMap's force-ssl-redirect (no
        certificate is configured for it). HSTS is the ConfigMap's line for every HTTPS response."""
        s = self._settings
        per_host = {host: HttpsPolicy(redirect=s.force_ssl_redirect or s.ssl_redirect, hsts=self._hsts)
                    for host in self.tls_hosts}
        for host, ingress in self._host_ingress.items():
            per_host[host] = self.https_policy(ingress, host) or HttpsPolicy(redirect=False, hsts=b"")
        others = HttpsPolicy(redirect=s.force_ssl_redirect, hsts=self._hsts)
        if not others.redirect and not others.hsts and not any(p.redirect or p.hsts for p in per_host.values()):
            return None
        return HttpsPolicy(redirect=others.redirect or any(p.redirect for p in per_host.values()), hsts=self._hsts,
                           per_host=MappingProxyType(dict(sorted(per_host.items()))), others=others)


def _fallback(hosts: Sequence[str]) -> str:
    if not hosts:
        return ""
    return f": {', '.join(dict.fromkeys(hosts))} get{'s' if len(set(hosts)) == 1 else ''} the default certificate"
