"""Ingress annotations: `pyngress.io/<name>`, and ingress-nginx's `nginx.ingress.kubernetes.io/<name>`.

Users migrate with their annotations as they are, so every setting is read under both prefixes; when both are
set, ours wins and the other is reported as a warning (two values for one setting is a mistake worth seeing).
A value we cannot use is an error Problem naming the annotation, and the setting keeps its default: the
Ingress is still served.

Balancing annotations (issue 3; ingress-nginx's names and defaults):
- `load-balance`: round_robin (default, or the ConfigMap's `load-balance`), random, least_conn, p2c, ewma;
- `upstream-hash-by`: a key template ($remote_addr, $host, $request_uri, $uri, $http_<name>, $cookie_<name>,
  $arg_<name>, literal text): consistent hashing on it replaces `load-balance`;
- `hash-algorithm` (ours): ring (default) or maglev;
- `upstream-hash-by-subset` ("true") and `upstream-hash-by-subset-size` (default 3).

Affinity annotations (ingress-nginx's names; `client-ip` and its timeout are ours):
- `affinity`: `cookie`, or `client-ip`; `affinity-mode`: `persistent` (our default) or `balanced`;
- `session-cookie-name` (INGRESSCOOKIE), `-path` (the route's path), `-domain`, `-samesite` (None, Lax,
  Strict), `-conditional-samesite-none`, `-expires` and `-max-age` (seconds), `-secure`,
  `-change-on-failure`;
- `client-ip-timeout` (seconds idle, 1..86400, default 10800, as a Service's sessionAffinityConfig).
The persistent token is keyed with the ConfigMap's `session-cookie-salt`; without one, with the Ingress's
namespace/name (stable across replicas, but guessable: a warning says so).
"""

from __future__ import annotations

from collections.abc import Callable

from pyngress.config.settings import parse_bool
from pyngress.model import (
    ALGORITHMS,
    HASH_ALGORITHMS,
    NO_AFFINITY,
    AffinitySpec,
    BalanceSpec,
    Ingress,
    Problem,
    ProxySettings,
    Service,
)

PREFIXES = ("pyngress.io/", "nginx.ingress.kubernetes.io/")
DEFAULT_SUBSET_SIZE = 3


class Annotations:
    """The annotations of one Ingress, read under both prefixes, collecting Problems as it goes."""

    def __init__(self, ingress: Ingress | Service) -> None:  # Service: health annotations (issue 7)
        self._ingress = ingress
        self.problems: list[Problem] = []

    def get(self, name: str) -> tuple[str, str] | None:
        """(annotation key, value) of setting `name`, ours first; None when neither is set."""
        found = [(p + name, self._ingress.meta.annotations[p + name])
                 for p in PREFIXES if p + name in self._ingress.meta.annotations]
        if len(found) > 1 and found[0][1] != found[1][1]:
            self._problem(found[1][0], f"ignored: {found[0][0]} is set too, and wins", "warning")
        return found[0] if found else None

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        return self.parsed(name, default, lambda v: _one_of(v.strip().lower(), allowed))

    def parsed(self, name: str, default: str, parse: Callable[[str], str]) -> str:
        found = self.get(name)
        if found is None:
            return default
        key, value = found
        try:
            return parse(value)
        except ValueError as exc:
            self._problem(key, f"{exc}; using {default or 'none'}")
            return default

    def _problem(self, key: str, message: str, severity: str = "error") -> None:
        meta = self._ingress.meta
        self.problems.append(Problem(self._ingress.kind, meta.namespace, meta.name, f"metadata.annotations[{key}]",
                                     message, meta.source, severity))


def balance_spec(ingress: Ingress, default_algorithm: str) -> tuple[BalanceSpec, list[Problem]]:
    """The BalanceSpec of every path of `ingress`, and the problems of its balancing annotations."""
    notes = Annotations(ingress)
    algorithm = notes.choice("load-balance", ALGORITHMS, default_algorithm)
    hash_by = notes.parsed("upstream-hash-by", "", _hash_template)
    hash_algorithm = notes.choice("hash-algorithm", HASH_ALGORITHMS, "ring")
    subset = notes.parsed("upstream-hash-by-subset", "false", lambda v: str(parse_bool(v)).lower())
    size = int(notes.parsed("upstream-hash-by-subset-size", str(DEFAULT_SUBSET_SIZE), _positive))
    spec = BalanceSpec(algorithm=algorithm, hash_by=hash_by, hash_algorithm=hash_algorithm,
                       subset_size=size if subset == "true" and hash_by else 0)
    return spec, notes.problems


AFFINITIES = ("cookie", "client-ip")
SAMESITE = {"none": "None", "lax": "Lax", "strict": "Strict"}


def affinity_spec(ingress: Ingress, settings: ProxySettings) -> tuple[AffinitySpec, list[Problem]]:
    """The session affinity of every path of `ingress` (NO_AFFINITY when it asks for none)."""
    notes = Annotations(ingress)
    kind = notes.choice("affinity", AFFINITIES, "")
    if not kind:
        return NO_AFFINITY, notes.problems

    def flag(name: str) -> bool:
        return notes.parsed(name, "false", lambda v: str(parse_bool(v)).lower()) == "true"

    def seconds(name: str) -> int:
        return int(notes.parsed(name, "0", _seconds))

    salt = settings.session_cookie_salt
    if kind == "cookie" and notes.choice("affinity-mode", ("persistent", "balanced"), "persistent") \
            == "persistent" and not salt:
        salt = f"pyngress:{ingress.meta.key}"
        notes.problems.append(Problem(
            "Ingress", ingress.meta.namespace, ingress.meta.name, "metadata.annotations[affinity]",
            "the session cookie is keyed with this Ingress's name: anyone can compute which pod address a "
            "cookie names; set session-cookie-salt in the ConfigMap (the same in every replica)",
            ingress.meta.source, "warning"))
    spec = AffinitySpec(
        kind=kind,
        mode=notes.choice("affinity-mode", ("persistent", "balanced"), "persistent"),
        cookie_name=notes.parsed("session-cookie-name", "INGRESSCOOKIE", _cookie_name),
        cookie_path=notes.parsed("session-cookie-path", "", _cookie_path),
        cookie_domain=notes.parsed("session-cookie-domain", "", lambda v: v.strip()),
        samesite=notes.parsed("session-cookie-samesite", "", _samesite),
        conditional_samesite_none=flag("session-cookie-conditional-samesite-none"),
        expires=seconds("session-cookie-expires"),
        max_age=seconds("session-cookie-max-age"),
        secure=flag("session-cookie-secure"),
        change_on_failure=flag("session-cookie-change-on-failure"),
        salt=salt,
        timeout=float(notes.parsed("client-ip-timeout", "10800", _timeout)),
        table_size=settings.affinity_table_size,
    )
    return spec, notes.problems


def _seconds(value: str) -> str:
    if not value.strip().isdigit():
        raise ValueError(f"{value!r} is not a whole number of seconds")
    return str(int(value))


def _timeout(value: str) -> str:
    if not value.strip().isdigit() or not 1 <= int(value) <= 86400:
        raise ValueError(f"{value!r} is not a number of seconds from 1 to 86400")
    return str(int(value))


def _cookie_name(value: str) -> str:
    name = value.strip()
    if not name or any(c in name for c in ' \t;,="()<>@:/[]?{}\\') or not name.isascii():
        raise ValueError(f"{value!r} is not a valid cookie name")
    return name


def _cookie_path(value: str) -> str:
    path = value.strip()
    if not path.startswith("/") or any(c in path for c in ";\r\n"):
        raise ValueError(f"{value!r} is not a cookie path (it starts with / and has no ;)")
    return path


def _samesite(value: str) -> str:
    try:
        return SAMESITE[value.strip().lower()]
    except KeyError:
        raise ValueError(f"{value!r} is not one of None, Lax, Strict") from None


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _positive(value: str) -> str:
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{value!r} is not a whole number of at least 1")
    return str(int(value))


def _hash_template(value: str) -> str:
    from pyngress.balancing.hash_key import compile_hash_key  # pure; raises ValueError naming the variable

    template = value.strip()
    if not template:
        raise ValueError("empty key template")
    compile_hash_key(template)
    return template
