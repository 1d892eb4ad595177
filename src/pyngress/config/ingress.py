"""Ingress manifests -> `Ingress`, validated the way the API server validates networking.k8s.io/v1.

In a cluster the API server has already refused invalid Ingresses; in file mode nobody has, so we apply the same
rules here (k8s.io/kubernetes pkg/apis/networking/validation) and report each violation as a Problem with its
field path. How much one error takes down, smallest unit first:

- a path (bad `path`, missing or unknown `pathType`, bad `backend`): that path is dropped, its siblings stay;
- a rule (bad `host`, `http` without paths): the rule and its paths are dropped, the other rules stay;
- `spec.defaultBackend` invalid: the default backend is dropped, the rules stay;
- the object (no `spec` mapping): the Ingress is dropped. With neither rules nor defaultBackend it is kept
  (serving nothing) with a Problem, so that `compile` can still see its class (see below).
Validation runs before class selection, which needs the IngressClasses; `compile` drops the Problems of Ingresses
that turn out to belong to another controller, which must stay silent. The API server would refuse the whole
object in every case; being finer grained keeps the rest of a site up
while its author fixes one line, which is the point of per-object errors.

A rejected rule or path stays in its tuple as an inert placeholder (`REJECTED_RULE`: no host, no paths;
`REJECTED_PATH`: a backend with neither service nor resource, which `is_rejected` recognises). That keeps the
indices of its siblings equal to the manifest's, so the field paths in the Problems `compile` reports later
("spec.rules[2].http.paths[0].backend.service.name") point at the right line. Placeholders are never served.

Rules checked: host is a lower-case DNS-1123 subdomain (no port, not an IP address), `*` only as the whole first
label; Exact and Prefix paths are absolute and free of `//`, `/./`, `/../`, `%2f`, trailing `/.` or `/..`;
ImplementationSpecific paths are absolute when given, and an empty one means "/" (the API allows it, ingress-nginx
serves it as "/"); a backend has exactly one of service / resource, a service backend a name and exactly one of
port.name / port.number (1-65535). `resource` backends parse fine here (they are valid); `compile` reports that
we cannot serve them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from pyngress.config import _fields as f
from pyngress.config._fields import ManifestError
from pyngress.model import (
    HTTPIngressPath,
    Ingress,
    IngressBackend,
    IngressRule,
    IngressTLS,
    Meta,
    PathType,
    Problem,
    ResourceBackendRef,
    ServiceBackendRef,
)

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_BAD_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F")
REJECTED_RULE = IngressRule()
REJECTED_PATH = HTTPIngressPath("", PathType.IMPLEMENTATION_SPECIFIC, IngressBackend())
Report = Callable[[ManifestError], None]
_PATH_TYPES = ", ".join(t.value for t in PathType)


def parse_ingress(doc: Mapping[str, Any], meta: Meta) -> tuple[Ingress | None, list[Problem]]:
    """Raises ManifestError only when the object itself is unusable; finer errors come back as Problems."""
    problems: list[Problem] = []

    def report(e: ManifestError) -> None:
        problems.append(Problem("Ingress", meta.namespace, meta.name, e.field, e.message, meta.source))

    spec = f.mapping(doc.get("spec"), "spec", required=True)
    raw_rules = f.sequence(spec.get("rules"), "spec.rules")
    if not raw_rules and spec.get("defaultBackend") is None:
        # kept (it serves nothing) so that compile can tell whether it is ours before reporting it
        report(ManifestError("spec", "must have rules or a defaultBackend"))
    class_name = f.optional_string(spec.get("ingressClassName"), "spec.ingressClassName")
    default_backend = None
    if spec.get("defaultBackend") is not None:
        try:
            default_backend = parse_backend(spec.get("defaultBackend"), "spec.defaultBackend")
        except ManifestError as e:
            report(e)
    rules = []
    for i, raw in enumerate(raw_rules):
        try:
            rules.append(_rule(raw, f"spec.rules[{i}]", report))
        except ManifestError as e:
            report(e)
            rules.append(REJECTED_RULE)
    tls = _tls(spec.get("tls"), report)
    return Ingress(meta, class_name, default_backend, tuple(rules), tls), problems


def is_rejected(path: HTTPIngressPath) -> bool:
    """True for the placeholder of a path the parser rejected (see the module docstring)."""
    return path.backend.service is None and path.backend.resource is None


def _rule(raw: Any, field: str, report: Report) -> IngressRule:
    rule = f.mapping(raw, field)
    host = f.string(rule.get("host"), f"{field}.host", default="")
    if host and (message := host_problem(host)):
        raise ManifestError(f"{field}.host", message)
    if rule.get("http") is None:
        return IngressRule(host, ())  # valid: a rule may name a host for TLS only
    http = f.mapping(rule.get("http"), f"{field}.http")
    raw_paths = f.sequence(http.get("paths"), f"{field}.http.paths")
    if not raw_paths:
        raise ManifestError(f"{field}.http.paths", "must have at least one path")
    paths = []
    for j, raw_path in enumerate(raw_paths):
        try:
            paths.append(_path(raw_path, f"{field}.http.paths[{j}]"))
        except ManifestError as e:
            report(e)
            paths.append(REJECTED_PATH)
    return IngressRule(host, tuple(paths))


def _path(raw: Any, field: str) -> HTTPIngressPath:
    p = f.mapping(raw, field)
    type_text = f.string(p.get("pathType"), f"{field}.pathType", default="")
    if not type_text:
        raise ManifestError(f"{field}.pathType", f"required value: one of {_PATH_TYPES}")
    try:
        path_type = PathType(type_text)
    except ValueError:
        raise ManifestError(f"{field}.pathType", f"must be one of {_PATH_TYPES}, not {type_text!r}") from None
    path = f.string(p.get("path"), f"{field}.path", default="")
    if message := path_problem(path, path_type):
        raise ManifestError(f"{field}.path", message)
    backend = parse_backend(p.get("backend"), f"{field}.backend")
    return HTTPIngressPath(path or "/", path_type, backend)


def parse_backend(value: Any, field: str) -> IngressBackend:
    b = f.mapping(value, field, required=True)
    if (b.get("service") is None) == (b.get("resource") is None):
        raise ManifestError(field, "must have exactly one of service or resource")
    if b.get("resource") is not None:
        r = f.mapping(b.get("resource"), f"{field}.resource")
        return IngressBackend(
            resource=ResourceBackendRef(
                api_group=f.string(r.get("apiGroup"), f"{field}.resource.apiGroup", default=""),
                kind=f.string(r.get("kind"), f"{field}.resource.kind"),
                name=f.string(r.get("name"), f"{field}.resource.name"),
            )
        )
    return IngressBackend(service=_service_ref(b.get("service"), f"{field}.service"))


def _service_ref(value: Any, field: str) -> ServiceBackendRef:
    s = f.mapping(value, field)
    name = f.string(s.get("name"), f"{field}.name", default="")
    if not name:
        raise ManifestError(f"{field}.name", "required value")
    port = f.mapping(s.get("port"), f"{field}.port", required=True)
    port_name = f.string(port.get("name"), f"{field}.port.name", default="") or None  # "" is absent in the API
    if (port_name is None) == (port.get("number") is None):
        raise ManifestError(f"{field}.port", "must have exactly one of name or number")
    if port_name is not None:
        return ServiceBackendRef(name, port_name=port_name)
    number = f.integer(port.get("number"), f"{field}.port.number", low=1, high=65535)
    return ServiceBackendRef(name, port_number=number)


def _tls(value: Any, report: Report) -> tuple[IngressTLS, ...]:
    out = []
    for i, raw in enumerate(f.sequence(value, "spec.tls")):
        field = f"spec.tls[{i}]"
        try:
            t = f.mapping(raw, field)
            raw_hosts = f.sequence(t.get("hosts"), f"{field}.hosts")
            hosts = tuple(f.string(h, f"{field}.hosts[{k}]") for k, h in enumerate(raw_hosts))
            out.append(IngressTLS(hosts, f.string(t.get("secretName"), f"{field}.secretName", default="")))
        except ManifestError as e:
            report(e)
    return tuple(out)


def host_problem(host: str) -> str | None:
    """Why `host` is not a valid Ingress rule host, or None. Messages say what to write instead."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return "must be a DNS name, not an IP address"
    except ValueError:
        pass
    if ":" in host:
        return "must not contain a port: the rule matches the Host header on any port"
    name = host.removeprefix("*.")
    if "*" in name:
        return "a wildcard is allowed only as the whole first label, as in '*.example.com'"
    if name != name.lower():
        return f"must be lower case ({host.lower()!r})"
    if len(host) > 253:
        return "must be at most 253 characters"
    if not _SUBDOMAIN.fullmatch(name):
        return (
            "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
            "each label starting and ending with a letter or digit"
        )
    if any(len(label) > 63 for label in name.split(".")):
        return "each label must be at most 63 characters"
    return None


def path_problem(path: str, path_type: PathType) -> str | None:
    """Why `path` is not valid for `path_type`, or None."""
    if not path:
        return None if path_type is PathType.IMPLEMENTATION_SPECIFIC else "required value for Exact and Prefix"
    if not path.startswith("/"):
        return "must be an absolute path (start with '/')"
    if path_type is PathType.IMPLEMENTATION_SPECIFIC:
        return None
    for part in _BAD_PATH_PARTS:
        if part in path:
            return f"must not contain {part!r}"
    if path.endswith(("/..", "/.")):
        return "must not end with '/..' or '/.'"
    return None
