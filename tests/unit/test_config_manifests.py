"""parse_manifest for the non-Ingress kinds: defaults, conditions, base64, coercion, malformed objects."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from pyngress.config import parse_manifest
from pyngress.model import ConfigMap, EndpointSlice, IngressClass, KubeObject, Problem, Secret, Service


def parse(text: str) -> tuple[KubeObject | None, list[Problem]]:
    doc: dict[str, Any] = yaml.safe_load(text)
    return parse_manifest(doc, "m.yaml")


def test_service_ports_and_defaults() -> None:
    obj, problems = parse("""
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {port: 443, targetPort: https}
  - {port: 9000}
""")
    assert problems == []
    assert isinstance(obj, Service)
    assert (obj.meta.namespace, obj.type, obj.meta.source) == ("default", "ClusterIP", "m.yaml")
    assert [(p.name, p.port, p.target_port) for p in obj.ports] == [
        ("http", 80, 8080),
        ("", 443, "https"),
        ("", 9000, None),
    ]


def test_external_name_service() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: a.b}"
    obj, _ = parse(text)
    assert isinstance(obj, Service) and (obj.type, obj.external_name) == ("ExternalName", "a.b")


def test_endpoint_slice_conditions_default_as_in_the_api() -> None:
    obj, problems = parse("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
  targetRef: {kind: Pod, name: web-1}
- addresses: [10.0.0.2]
  conditions: {ready: false}
- addresses: [10.0.0.3]
  conditions: {ready: false, serving: true, terminating: true}
""")
    assert problems == []
    assert isinstance(obj, EndpointSlice)
    assert (obj.service_name, obj.meta.namespace) == ("web", "shop")
    assert (obj.ports[0].name, obj.ports[0].port) == ("http", 8080)
    conditions = [(e.ready, e.serving, e.terminating, e.target_ref_name) for e in obj.endpoints]
    assert conditions == [(True, True, False, "web-1"), (False, False, False, ""), (False, True, True, "")]


def test_endpoint_slice_without_service_label_is_a_warning() -> None:
    obj, problems = parse("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}")
    assert obj is None
    assert [(p.field, p.severity) for p in problems] == [("metadata.labels", "warning")]


def test_endpoint_slice_bad_condition_names_the_field() -> None:
    obj, problems = parse("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s, labels: {kubernetes.io/service-name: web}}
endpoints: [{addresses: [10.0.0.1], conditions: {ready: "yes"}}]
""")
    assert obj is None and problems[0].field == "endpoints[0].conditions.ready"


def test_ingress_class_is_cluster_scoped_and_reads_default_annotation() -> None:
    obj, _ = parse("""
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: pyngress
  namespace: ignored
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: pyngress.io/ingress-controller}
""")
    assert isinstance(obj, IngressClass)
    assert (obj.meta.namespace, obj.controller, obj.is_default) == ("", "pyngress.io/ingress-controller", True)


def test_secret_data_is_base64_decoded_and_string_data_overrides() -> None:
    crt = base64.b64encode(b"CERT").decode()
    obj, problems = parse(f"""
apiVersion: v1
kind: Secret
metadata: {{name: tls}}
type: kubernetes.io/tls
data: {{tls.crt: "{crt[:4]}\\n{crt[4:]}", tls.key: {base64.b64encode(b"old").decode()}}}
stringData: {{tls.key: "néw"}}
""")
    assert problems == []
    assert isinstance(obj, Secret)
    assert obj.type == "kubernetes.io/tls"
    assert dict(obj.data) == {"tls.crt": b"CERT", "tls.key": "néw".encode()}


def test_secret_with_bad_base64_is_a_problem() -> None:
    obj, problems = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {key: 'not base64!'}")
    assert obj is None
    assert (problems[0].field, problems[0].message) == ("data.key", "invalid base64 data")


def test_configmap_values_are_strings_even_when_unquoted() -> None:
    obj, problems = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: 5, b: true, d: 0.5}")
    assert problems == []
    assert isinstance(obj, ConfigMap)
    assert dict(obj.data) == {"a": "5", "b": "true", "d": "0.5"}


def test_annotations_and_labels_are_kept_as_strings() -> None:
    obj, _ = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {n: 1}, annotations: {b: false}}")
    assert obj is not None and (dict(obj.meta.labels), dict(obj.meta.annotations)) == ({"n": "1"}, {"b": "false"})


def test_missing_name_is_a_problem() -> None:
    obj, problems = parse("apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n")
    assert obj is None and (problems[0].kind, problems[0].field) == ("Service", "metadata.name")


def test_service_port_out_of_range_is_a_problem() -> None:
    obj, problems = parse("apiVersion: v1\nkind: Service\nmetadata: {name: w}\nspec: {ports: [{port: 0}]}")
    assert obj is None
    assert (problems[0].field, problems[0].message) == ("spec.ports[0].port", "must be between 1 and 65535, not 0")


def test_unknown_kind_returns_nothing() -> None:
    assert parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: p}") == (None, [])


def test_wrong_api_version_of_a_known_kind_is_a_problem() -> None:
    obj, problems = parse("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s}")
    assert obj is None and "unsupported apiVersion 'discovery.k8s.io/v1beta1'" in problems[0].message
