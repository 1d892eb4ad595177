"""ssl-protocols / ssl-ciphers as ingress-nginx users write them: migration must not break `pyngress check`."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from pyngress.config import parse_settings
from pyngress.config.tls_values import parse_verify_depth
from pyngress.model import ConfigMap, Meta, Problem, ProxySettings
from pyngress.model.tls import DEFAULT_SSL_CIPHERS


def parse(**data: str) -> tuple[ProxySettings, list[Problem]]:
    return parse_settings(ConfigMap(Meta("ingress", "nginx", source="cm.yaml"), MappingProxyType(data)))


def test_ingress_nginx_legacy_protocol_list_is_a_warning_and_serves_12_and_13() -> None:
    settings, problems = parse(**{"ssl-protocols": "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3"})
    assert settings.ssl_protocols == ("TLSv1.2", "TLSv1.3")
    assert [(p.field, p.severity) for p in problems] == [("data.ssl-protocols", "warning")]
    assert "TLSv1 TLSv1.1 ignored" in problems[0].message
    assert "serving TLSv1.2 TLSv1.3" in problems[0].message


def test_old_versions_only_is_a_warning_and_the_default_is_served() -> None:
    settings, problems = parse(**{"ssl-protocols": "SSLv3 TLSv1"})
    assert settings.ssl_protocols == ("TLSv1.2", "TLSv1.3")
    assert [p.severity for p in problems] == ["warning"]
    assert "serving TLSv1.2 TLSv1.3" in problems[0].message


def test_only_13_is_kept_without_problem() -> None:
    settings, problems = parse(**{"ssl-protocols": "tlsv1.3"})
    assert settings.ssl_protocols == ("TLSv1.3",)
    assert problems == []


def test_a_name_nginx_does_not_know_is_an_error_keeping_the_default() -> None:
    settings, problems = parse(**{"ssl-protocols": "TLSv1.2 TLSv1.4"})
    assert settings.ssl_protocols == ("TLSv1.2", "TLSv1.3")
    assert [(p.field, p.severity) for p in problems] == [("data.ssl-protocols", "error")]
    assert "TLSv1.4" in problems[0].message


@pytest.mark.parametrize("ciphers", [
    "HIGH:!aNULL:!MD5",  # nginx's own default
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:NOT-A-CIPHER",  # unknown names are skipped
    "ALL:!EXPORT:!LOW:@STRENGTH",
])
def test_cipher_strings_openssl_takes_pass_through(ciphers: str) -> None:
    settings, problems = parse(**{"ssl-ciphers": ciphers})
    assert problems == []
    assert settings.ssl_ciphers == ciphers


def test_a_cipher_string_openssl_rejects_is_an_error_and_the_default_stays() -> None:
    settings, problems = parse(**{"ssl-ciphers": "NOT-A-CIPHER:ALSO-NOT"})
    assert settings.ssl_ciphers == DEFAULT_SSL_CIPHERS
    assert [(p.field, p.severity) for p in problems] == [("data.ssl-ciphers", "error")]
    assert "OpenSSL selects no cipher" in problems[0].message


def test_verify_depth() -> None:
    assert parse_verify_depth(" 2 ") == 2
    for bad in ("-1", "x", "101"):
        with pytest.raises(ValueError):
            parse_verify_depth(bad)
