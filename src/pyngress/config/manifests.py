"""Manifest dicts -> model objects, for the kinds pyngress reads.

`parse_manifest(doc, source)` is the one entry point. It takes one decoded document (from a file, or a JSON object
from the API server) and returns the model object plus the Problems found in it:

- Known kinds: Ingress (networking.k8s.io/v1), Service (v1), EndpointSlice (discovery.k8s.io/v1),
  IngressClass (networking.k8s.io/v1), Secret (v1), ConfigMap (v1), Pod (v1: only its CPU request).
  Another apiVersion of a known kind is a Problem "unsupported apiVersion": it is almost always an old
  manifest (extensions/v1beta1 Ingress) whose fields differ, and guessing would route traffic wrongly.
- Unknown kinds (Deployment, ReplicaSet, ...) return (None, []): a directory of manifests holds many of them.
- A malformed object of a known kind is dropped with one Problem naming the field, except for Ingress, which
  is validated per rule and per path (see `ingress`), because one bad path must not take down a whole site.

Defaults follow the API: namespace "default" for namespaced kinds ("" for the cluster-scoped IngressClass);
EndpointSlice conditions.ready absent = true, serving absent = ready, terminating absent = false; Secret `data`
is base64 and `stringData` (plain text, UTF-8) overrides it key by key, as the API server merges them.
A Pod's CPU request is the sum of `spec.containers[].resources.requests.cpu` (init containers, sidecars
included, are left out: they do not serve the traffic); a container that sets only `limits.cpu` requests its
limit, as the API server defaults it. Quantities are parsed strictly (`weights.cpu_millicores`): a bad one
drops the Pod with a Problem naming the field, and its endpoints are weighed as Pods without a request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from pyngress.config import _fields as f
from pyngress.config._fields import ManifestError
from pyngress.config.ingress import parse_ingress
from pyngress.config.weights import cpu_millicores
from pyngress.model import (
    ConfigMap,
    EndpointPort,
    EndpointSlice,
    IngressClass,
    KubeObject,
    Meta,
    Pod,
    Problem,
    Secret,
    Service,
    ServicePort,
    SliceEndpoint,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
MAX_PORT = 65535

Parser = Callable[[Mapping[str, Any], Meta], tuple[KubeObject | None, list[Problem]]]


def parse_manifest(doc: Mapping[str, Any], source: str = "") -> tuple[KubeObject | None, list[Problem]]:
    """One document -> (object or None, problems). Never raises for bad input."""
    if not isinstance(doc, Mapping):
        return None, [Problem("document", "", "", "", "not a mapping (a Kubernetes object)", source)]
    kind = doc.get("kind")
    entry = _PARSERS.get(kind) if isinstance(kind, str) else None
    if entry is None:
        return None, []
    api_version, namespaced, parse = entry
    assert isinstance(kind, str)
    try:
        meta = parse_meta(doc.get("metadata"), source, namespaced=namespaced)
    except ManifestError as e:
        return None, [Problem(kind, "", _raw_name(doc), e.field, e.message, source)]
    if doc.get("apiVersion") != api_version:
        message = f"unsupported apiVersion {doc.get('apiVersion')!r} (pyngress reads {api_version})"
        return None, [_problem(kind, meta, "apiVersion", message)]
    try:
        return parse(doc, meta)
    except ManifestError as e:
        return None, [_problem(kind, meta, e.field, e.message)]


def parse_meta(value: Any, source: str, *, namespaced: bool) -> Meta:
    md = f.mapping(value, "metadata", required=True)
    name = f.string(md.get("name"), "metadata.name")
    if not name:
        raise ManifestError("metadata.name", "required value")
    namespace = f.string(md.get("namespace"), "metadata.namespace", default="") or "default"
    created = md.get("creationTimestamp")
    return Meta(
        name=name,
        namespace=namespace if namespaced else "",
        labels=f.string_map(md.get("labels"), "metadata.labels"),
        annotations=f.string_map(md.get("annotations"), "metadata.annotations"),
        creation_timestamp="" if created is None else str(created),
        source=source,
    )


def _problem(kind: str, meta: Meta, field: str, message: str, severity: str = "error") -> Problem:
    return Problem(kind, meta.namespace, meta.name, field, message, meta.source, severity)


def _raw_name(doc: Mapping[str, Any]) -> str:
    md = doc.get("metadata")
    name = md.get("name") if isinstance(md, Mapping) else None
    return name if isinstance(name, str) and name else "(unnamed)"


def _ingress(doc: Mapping[str, Any], meta: Meta) -> tuple[KubeObject | None, list[Problem]]:
    return parse_ingress(doc, meta)


def _service(doc: Mapping[str, Any], meta: Meta) -> tuple[KubeObject | None, list[Problem]]:
    spec = f.mapping(doc.get("spec"), "spec")
    ports = tuple(
        _service_port(p, f"spec.ports[{i}]") for i, p in enumerate(f.sequence(spec.get("ports"), "spec.ports"))
    )
    affinity = f.mapping(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    client_ip = f.mapping(affinity.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
    timeout = client_ip.get("timeoutSeconds", 10800)
    svc = Service(
        meta=meta,
        type=f.string(spec.get("type"), "spec.type", default="ClusterIP"),
        ports=ports,
        session_affinity=f.string(spec.get("sessionAffinity"), "spec.sessionAffinity", default="None"),
        session_affinity_timeout=f.integer(
            timeout, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", low=1, high=86400
        ),
        external_name=f.string(spec.get("externalName"), "spec.externalName", default=""),
        external_traffic_policy=f.string(spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy",
                                         default="Cluster"),  # issue 9 (L4)
    )
    return svc, []


def _service_port(value: Any, field: str) -> ServicePort:
    p = f.mapping(value, field)
    target = p.get("targetPort")
    if target is not None and not isinstance(target, str):
        target = f.integer(target, f"{field}.targetPort", low=1, high=MAX_PORT)
    return ServicePort(
        port=f.integer(p.get("port"), f"{field}.port", low=1, high=MAX_PORT),
        name=f.string(p.get("name"), f"{field}.name", default=""),
        target_port=target,
        protocol=f.string(p.get("protocol"), f"{field}.protocol", default="TCP"),
    )


def _endpoint_slice(doc: Mapping[str, Any], meta: Meta) -> tuple[KubeObject | None, list[Problem]]:
    service_name = meta.labels.get(SERVICE_NAME_LABEL, "")
    if not service_name:
        message = f"no {SERVICE_NAME_LABEL} label: the slice belongs to no Service and is not used"
        return None, [_problem("EndpointSlice", meta, "metadata.labels", message, "warning")]
    endpoints = tuple(
        _slice_endpoint(e, f"endpoints[{i}]") for i, e in enumerate(f.sequence(doc.get("endpoints"), "endpoints"))
    )
    ports = tuple(_slice_port(p, f"ports[{i}]") for i, p in enumerate(f.sequence(doc.get("ports"), "ports")))
    address_type = f.string(doc.get("addressType"), "addressType", default="IPv4")
    return EndpointSlice(meta, service_name, address_type, endpoints, ports), []


def _slice_endpoint(value: Any, field: str) -> SliceEndpoint:
    e = f.mapping(value, field)
    addresses = f.sequence(e.get("addresses"), f"{field}.addresses")
    conditions = f.mapping(e.get("conditions"), f"{field}.conditions")
    ready = f.boolean(conditions.get("ready"), f"{field}.conditions.ready", default=True)
    target_ref = f.mapping(e.get("targetRef"), f"{field}.targetRef")
    return SliceEndpoint(
        addresses=tuple(f.string(a, f"{field}.addresses[{i}]") for i, a in enumerate(addresses)),
        ready=ready,
        serving=f.boolean(conditions.get("serving"), f"{field}.conditions.serving", default=ready),
        terminating=f.boolean(conditions.get("terminating"), f"{field}.conditions.terminating", default=False),
        target_ref_name=f.string(target_ref.get("name"), f"{field}.targetRef.name", default=""),
        node_name=f.string(e.get("nodeName"), f"{field}.nodeName", default=""),
    )


def _slice_port(value: Any, field: str) -> EndpointPort:
    p = f.mapping(value, field)
    return EndpointPort(
        port=f.integer(p.get("port"), f"{field}.port", low=1, high=MAX_PORT),
        name=f.string(p.get("name"), f"{field}.name", default=""),
        protocol=f.string(p.get("protocol"), f"{field}.protocol", default="TCP"),
    )


def _ingress_class(doc: Mapping[str, Any], meta: Meta) -> tuple[KubeObject | None, list[Problem]]:
    spec = f.mapping(doc.get("spec"), "spec")
    controller = f.string(spec.get("controller"), "spec.controller", default="")
    is_default = meta.annotations.get(DEFAULT_CLASS_ANNOTATION, "") == "true"
    return IngressClass(meta, controller, is_default), []


def _secret(doc: Mapping[str, Any], meta: Meta) -> tuple[KubeObject | None, list[Problem]]:
    data: dict[str, bytes] = {}
    for key, text in f.string_map(doc.get("data"), "data").items():
        data[key] = _base64(text, f"data.{key}")
    for key, text in f.string_map(doc.get("stringData"), "stringData").items():
        data[key] = text.encode()
    secret_type = f.string(doc.get("type"), "type", default="Opaque")
    return Secret(meta, secret_type, MappingProxyType(dict(sorted(data.items())))), []


def _base64(text: str, field: str) -> bytes:
    # YAML block scalars often wrap long base64 over several lines: whitespace is not part of the value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError(field, "invalid base64 data") from None


def _config_map(doc: Mapping[str, Any], meta: Meta) -> tuple[KubeObject | None, list[Problem]]:
    return ConfigMap(meta, f.string_map(doc.get("data"), "data")), []


def _pod(doc: Mapping[str, Any], meta: Meta) -> tuple[KubeObject | None, list[Problem]]:
    spec = f.mapping(doc.get("spec"), "spec")
    containers = f.sequence(spec.get("containers"), "spec.containers")
    millis = sum(_container_cpu(c, f"spec.containers[{i}]") for i, c in enumerate(containers))
    return Pod(meta, millis), []


def _container_cpu(value: Any, field: str) -> int:
    resources = f.mapping(f.mapping(value, field).get("resources"), f"{field}.resources")
    for kind in ("requests", "limits"):  # requests.cpu defaults to limits.cpu (API server defaulting)
        values = f.mapping(resources.get(kind), f"{field}.resources.{kind}")
        if values.get("cpu") is not None:
            try:
                return cpu_millicores(values["cpu"])
            except ValueError as exc:
                raise ManifestError(f"{field}.resources.{kind}.cpu", str(exc)) from None
    return 0


_PARSERS: dict[str, tuple[str, bool, Parser]] = {
    "Ingress": ("networking.k8s.io/v1", True, _ingress),
    "Service": ("v1", True, _service),
    "EndpointSlice": ("discovery.k8s.io/v1", True, _endpoint_slice),
    "IngressClass": ("networking.k8s.io/v1", False, _ingress_class),
    "Secret": ("v1", True, _secret),
    "ConfigMap": ("v1", True, _config_map),
    "Pod": ("v1", True, _pod),
}
