"""config.tls: certificates from Secrets (checked, isolated when bad), the SNI table, HTTPS policy, backend TLS."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
import trustme

from pyngress.config import CompileOptions, compile_snapshot, format_check, parse_manifest
from pyngress.config.tls import covers, hsts_line
from pyngress.model import KubeObject, Problem, ProxySettings, Snapshot
from pyngress.runtime.https import policy_for_host

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC).timestamp()
CA = trustme.CA()


def secret(name: str, cert: trustme.LeafCert | None = None, *, crt: bytes | None = None,
           key: bytes | None = None, ca: bytes | None = None, string_data: bool = False) -> dict[str, Any]:
    data: dict[str, bytes] = {}
    if cert is not None:
        data["tls.crt"] = cert.cert_chain_pems[0].bytes()
        data["tls.key"] = cert.private_key_pem.bytes()
    if crt is not None:
        data["tls.crt"] = crt
    if key is not None:
        data["tls.key"] = key
    if ca is not None:
        data["ca.crt"] = ca
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                           "metadata": {"name": name, "namespace": "default"}}
    if string_data:
        doc["stringData"] = {k: v.decode() for k, v in data.items()}
    else:
        doc["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return doc


def ingress(name: str, hosts: list[str], tls: list[tuple[list[str], str]], *, created: str = "",
            annotations: dict[str, str] | None = None, service: str = "web") -> dict[str, Any]:
    rules = [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                             "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}
             for h in hosts]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "annotations": annotations or {}},
            "spec": {"ingressClassName": "pyngress", "rules": rules,
                     "tls": [{"hosts": h, "secretName": s} for h, s in tls]}}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"ports": [{"port": 80}]}}


def compile_docs(*docs: dict[str, Any], now: float | None = NOW, **options: Any) -> Snapshot:
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for doc in [SERVICE, *docs]:
        obj, found = parse_manifest(doc, "test.yaml")
        problems += found
        if obj is not None:
            objects.append(obj)
    return compile_snapshot(objects, CompileOptions(**options), problems=problems, now=now)


def tls_problems(snap: Snapshot) -> list[Problem]:
    return [p for p in snap.problems if "endpoints" not in p.message and "503" not in p.message]


def test_hosts_get_the_certificate_of_their_secret() -> None:
    cert = CA.issue_cert("a.example.com", "b.example.com")
    snap = compile_docs(secret("ab", cert), ingress("web", ["a.example.com"], [(["a.example.com", "b.example.com"],
                                                                               "ab")]))
    assert dict(snap.tls.hosts) == {"a.example.com": "default/ab", "b.example.com": "default/ab"}
    certificate = snap.tls.certificates["default/ab"]
    assert certificate.names == ("a.example.com", "b.example.com")
    assert certificate.key_pem == cert.private_key_pem.bytes()
    assert tls_problems(snap) == []


def test_string_data_is_accepted() -> None:
    cert = CA.issue_cert("a.example.com")
    snap = compile_docs(secret("a", cert, string_data=True), ingress("web", ["a.example.com"],
                                                                     [(["a.example.com"], "a")]))
    assert snap.tls.hosts["a.example.com"] == "default/a"


@pytest.mark.parametrize(("broken", "field", "words"), [
    ({"crt": b"not a certificate"}, "data.tls.crt", "not a PEM certificate"),
    ({"key": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "data.tls.key",
     "not an unencrypted PEM private key"),
    ({"key": CA.issue_cert("other.example.com").private_key_pem.bytes()}, "data.tls.key", "does not belong"),
])
def test_invalid_secret_is_an_error_on_the_secret_and_isolated(broken: dict[str, bytes], field: str,
                                                               words: str) -> None:
    good = CA.issue_cert("good.example.com")
    bad = secret("bad", CA.issue_cert("bad.example.com"), **broken)
    snap = compile_docs(bad, secret("good", good),
                        ingress("web", ["bad.example.com", "good.example.com"],
                                [(["bad.example.com"], "bad"), (["good.example.com"], "good")]))
    [problem] = tls_problems(snap)
    assert (problem.kind, problem.name, problem.field, problem.severity) == ("Secret", "bad", field, "error")
    assert words in problem.message
    assert "bad.example.com gets the default certificate" in problem.message
    assert dict(snap.tls.hosts) == {"good.example.com": "default/good"}
    assert "bad.example.com" in snap.tls.tls_hosts  # still a TLS host: redirected, served with the default
    assert len(snap.routes) == 2  # the routes themselves are untouched


def test_expired_certificate_is_reported_with_its_date() -> None:
    old = CA.issue_cert("old.example.com", not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
    snap = compile_docs(secret("old", old), ingress("web", ["old.example.com"], [(["old.example.com"], "old")]))
    [problem] = tls_problems(snap)
    assert problem.kind == "Secret" and "expired on 2021-01-01" in problem.message
    assert snap.tls.hosts == {}
    # without a clock (tests, demo) expiry is not judged
    assert compile_docs(secret("old", old), ingress("web", ["old.example.com"], [(["old.example.com"], "old")]),
                        now=None).tls.hosts == {"old.example.com": "default/old"}


def test_missing_secret_is_an_error_on_the_ingress() -> None:
    snap = compile_docs(ingress("web", ["a.example.com"], [(["a.example.com"], "nope")]))
    [problem] = tls_problems(snap)
    assert (problem.kind, problem.field) == ("Ingress", "spec.tls[0].secretName")
    assert "Secret default/nope not found: a.example.com gets the default certificate" in problem.message


def test_certificate_not_for_the_host_is_a_warning_and_not_used() -> None:
    snap = compile_docs(secret("x", CA.issue_cert("x.example.com")),
                        ingress("web", ["y.example.com"], [(["y.example.com"], "x")]))
    [problem] = tls_problems(snap)
    assert problem.severity == "warning" and problem.field == "spec.tls[0].hosts[0]"
    assert snap.tls.hosts == {}


def test_wildcard_certificate_and_rule_hosts_matched_by_name() -> None:
    snap = compile_docs(secret("wild", CA.issue_cert("*.example.com")),
                        ingress("web", ["a.example.com", "b.example.com"], [(["*.example.com"], "wild")]))
    # the listed wildcard name, plus the rule hosts its certificate covers (ingress-nginx does the same)
    assert dict(snap.tls.hosts) == {"*.example.com": "default/wild", "a.example.com": "default/wild",
                                    "b.example.com": "default/wild"}


def test_oldest_ingress_wins_a_host() -> None:
    snap = compile_docs(secret("one", CA.issue_cert("a.example.com")),
                        secret("two", CA.issue_cert("a.example.com")),
                        ingress("new", ["a.example.com"], [(["a.example.com"], "two")], created="2026-02-01"),
                        ingress("old", ["a.example.com"], [(["a.example.com"], "one")], created="2026-01-01"))
    assert snap.tls.hosts["a.example.com"] == "default/one"
    assert any(p.name == "new" and p.severity == "warning" and "older Ingress default/old" in p.message
               for p in snap.problems)


def test_default_ssl_certificate() -> None:
    cert = CA.issue_cert("*.example.com")
    snap = compile_docs(secret("default-cert", cert), default_ssl_certificate="default/default-cert")
    assert snap.tls.default == "default/default-cert" and "default/default-cert" in snap.tls.certificates
    missing = compile_docs(default_ssl_certificate="default/absent")
    assert missing.tls.default == "" and any(p.kind == "Secret" and p.name == "absent" for p in missing.problems)


def test_redirect_and_hsts_policy_per_route() -> None:
    cert = CA.issue_cert("tls.example.com")
    snap = compile_docs(secret("c", cert), ingress("tls", ["tls.example.com"], [(["tls.example.com"], "c")]),
                        ingress("plain", ["plain.example.com"], []),
                        ingress("forced", ["forced.example.com"], [],
                                annotations={"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}),
                        ingress("off", ["off.example.com"], [(["off.example.com"], "c")],
                                annotations={"pyngress.io/ssl-redirect": "false"}))
    policies = {r.host: r.https for r in snap.routes}
    assert policies["tls.example.com"] is not None and policies["tls.example.com"].redirect
    assert policies["plain.example.com"] is not None and not policies["plain.example.com"].redirect
    assert policies["forced.example.com"] is not None and policies["forced.example.com"].redirect
    assert policies["off.example.com"] is not None and not policies["off.example.com"].redirect
    assert policies["tls.example.com"].hsts == \
        b"Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n"


def test_hsts_line_from_settings() -> None:
    assert hsts_line(ProxySettings(hsts=False)) == b""
    assert hsts_line(ProxySettings(hsts_max_age=60, hsts_include_subdomains=False, hsts_preload=True)) == \
        b"Strict-Transport-Security: max-age=60; preload\r\n"


def test_no_policy_without_hsts_or_redirect() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pyngress", "namespace": "default"},
          "data": {"hsts": "false", "ssl-redirect": "false"}}
    snap = compile_docs(cm, secret("c", CA.issue_cert("a.example.com")),
                        ingress("web", ["a.example.com"], [(["a.example.com"], "c")]))
    assert [r.https for r in snap.routes] == [None]


def test_backend_protocol_https_with_verification() -> None:
    ca_pem = CA.cert_pem.bytes()
    snap = compile_docs(secret("pod-ca", ca=ca_pem),
                        ingress("web", ["a.example.com"], [], annotations={
                            "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                            "nginx.ingress.kubernetes.io/proxy-ssl-verify": "on",
                            "nginx.ingress.kubernetes.io/proxy-ssl-secret": "default/pod-ca",
                            "nginx.ingress.kubernetes.io/proxy-ssl-server-name": "on"}))
    [route] = snap.routes
    up = route.upstream_tls
    assert up is not None and up.verify and up.ca_pem == ca_pem
    assert up.verify_name == up.server_name == "web.default.svc"
    assert tls_problems(snap) == []


def test_backend_protocol_http_means_no_upstream_tls_and_bad_values_are_errors() -> None:
    snap = compile_docs(ingress("web", ["a.example.com"], [],
                                annotations={"pyngress.io/backend-protocol": "HTTPX"}))
    assert snap.routes[0].upstream_tls is None
    assert any("backend-protocol" in p.field and p.severity == "error" for p in snap.problems)


def test_ssl_passthrough_maps_hosts_to_routes() -> None:
    snap = compile_docs(ingress("pass", ["secure.example.com"], [],
                                annotations={"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}),
                        ingress("web", ["www.example.com"], []))
    assert list(snap.tls.passthrough) == ["secure.example.com"]
    assert snap.tls.passthrough["secure.example.com"].backend.service == "web"


def test_covers_one_label_wildcards() -> None:
    assert covers(["*.example.com"], "a.example.com")
    assert not covers(["*.example.com"], "a.b.example.com")
    assert not covers(["*.example.com"], "example.com")
    assert covers(["a.example.com"], "a.example.com")


def test_check_shows_tls_hosts_and_the_default() -> None:
    snap = compile_docs(secret("c", CA.issue_cert("a.example.com")),
                        ingress("web", ["a.example.com", "b.example.com"],
                                [(["a.example.com"], "c"), (["b.example.com"], "missing")]))
    text = format_check(snap)
    assert "TLS HOST" in text
    assert any(line.startswith("a.example.com") and "default/c" in line for line in text.splitlines())
    assert any(line.startswith("b.example.com") and "(default)" in line for line in text.splitlines())
    assert "default certificate: generated self-signed" in text
    assert "Secret default/missing not found" in text


def test_equal_inputs_give_equal_snapshots() -> None:
    docs = (secret("c", CA.issue_cert("a.example.com")),
            ingress("web", ["a.example.com"], [(["a.example.com"], "c")]))
    assert compile_docs(*docs) == compile_docs(*docs)


def test_backend_tls_tuning_annotations() -> None:
    snap = compile_docs(ingress("web", ["a.example.com"], [], annotations={
        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
        "nginx.ingress.kubernetes.io/proxy-ssl-protocols": "TLSv1 TLSv1.1 TLSv1.2",
        "pyngress.io/proxy-ssl-ciphers": "HIGH:!aNULL:!MD5",
        "nginx.ingress.kubernetes.io/proxy-ssl-verify-depth": "2"}))
    up = snap.routes[0].upstream_tls
    assert up is not None
    assert (up.protocols, up.ciphers, up.verify_depth) == (("TLSv1.2",), "HIGH:!aNULL:!MD5", 2)
    [warning] = tls_problems(snap)
    assert warning.severity == "warning"
    assert warning.field == "metadata.annotations[nginx.ingress.kubernetes.io/proxy-ssl-protocols]"
    assert "TLSv1 TLSv1.1 ignored" in warning.message


def test_backend_tls_tuning_bad_values_are_errors_and_keep_defaults() -> None:
    snap = compile_docs(ingress("web", ["a.example.com"], [], annotations={
        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
        "nginx.ingress.kubernetes.io/proxy-ssl-ciphers": "NOPE-NOTHING",
        "nginx.ingress.kubernetes.io/proxy-ssl-verify-depth": "deep"}))
    up = snap.routes[0].upstream_tls
    assert up is not None and (up.protocols, up.ciphers, up.verify_depth) == ((), "", 1)
    fields = sorted(p.field for p in tls_problems(snap) if p.severity == "error")
    assert fields == ["metadata.annotations[nginx.ingress.kubernetes.io/proxy-ssl-ciphers]",
                      "metadata.annotations[nginx.ingress.kubernetes.io/proxy-ssl-verify-depth]"]


def test_unmatched_policy_per_host_as_ingress_nginx_default_location() -> None:
    cert = CA.issue_cert("*.example.com", "plain-tls.example.org")
    snap = compile_docs(
        secret("wild", cert),
        ingress("old", ["*.example.com"], [(["*.example.com"], "wild")], created="2020-01-01T00:00:00Z"),
        ingress("new", ["*.example.com", "open.example.net"], [], created="2021-01-01T00:00:00Z",
                annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"}),
        ingress("opt-out", ["quiet.example.org"], [(["plain-tls.example.org"], "wild")],
                annotations={"pyngress.io/ssl-redirect": "false"}))
    unmatched = snap.tls.unmatched
    assert unmatched is not None and unmatched.redirect and unmatched.hsts
    assert policy_for_host(unmatched, "a.example.com").redirect  # the oldest Ingress of the host decides
    assert not policy_for_host(unmatched, "open.example.net").redirect  # no TLS for it
    assert not policy_for_host(unmatched, "quiet.example.org").redirect  # its Ingress says ssl-redirect false
    assert policy_for_host(unmatched, "plain-tls.example.org").redirect  # a TLS host without rules: ConfigMap's
    other = policy_for_host(unmatched, "unknown.example.com.au")
    assert not other.redirect and other.hsts == hsts_line(ProxySettings())
    assert not policy_for_host(unmatched, "").redirect


def test_no_unmatched_policy_without_hsts_and_redirects() -> None:
    snap = compile_docs({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pyngress",
                                                                              "namespace": "default"},
                         "data": {"hsts": "false"}},
                        ingress("web", ["a.example.com"], []))
    assert snap.tls.unmatched is None
