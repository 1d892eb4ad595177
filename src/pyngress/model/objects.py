"""The Kubernetes objects pyngress reads, as frozen dataclasses.

Only the fields the controller uses are kept. Every object remembers where it came from (`Meta.source`: a file
path in file mode, empty in a cluster) so that a Problem can name the file, the object and the field.
Parsing from manifests lives in `config.manifests`; these classes do no validation of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})


def _empty() -> Mapping[str, str]:
    return EMPTY


@dataclass(frozen=True, slots=True)
class Meta:
    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty)
    creation_timestamp: str = ""  # RFC 3339 as in the manifest; "" sorts first (oldest)
    source: str = ""  # file path in file mode; "" when read from the API server

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PathType(Enum):
    EXACT = "Exact"
    PREFIX = "Prefix"
    IMPLEMENTATION_SPECIFIC = "ImplementationSpecific"  # we treat it as Prefix (documented in the README)


@dataclass(frozen=True, slots=True)
class ServiceBackendRef:
    name: str
    port_name: str | None = None  # exactly one of port_name / port_number is set
    port_number: int | None = None

    @property
    def port_text(self) -> str:
        return self.port_name if self.port_name is not None else str(self.port_number)


@dataclass(frozen=True, slots=True)
class ResourceBackendRef:
    api_group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class IngressBackend:
    service: ServiceBackendRef | None = None
    resource: ResourceBackendRef | None = None


@dataclass(frozen=True, slots=True)
class HTTPIngressPath:
    path: str
    path_type: PathType
    backend: IngressBackend


@dataclass(frozen=True, slots=True)
class IngressRule:
    host: str = ""  # "" means every host
    paths: tuple[HTTPIngressPath, ...] = ()


@dataclass(frozen=True, slots=True)
class IngressTLS:
    hosts: tuple[str, ...] = ()
    secret_name: str = ""


@dataclass(frozen=True, slots=True)
class Ingress:
    meta: Meta
    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    rules: tuple[IngressRule, ...] = ()
    tls: tuple[IngressTLS, ...] = ()
    kind = "Ingress"


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str = ""
    target_port: int | str | None = None  # None means "same as port"
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Service:
    meta: Meta
    type: str = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    session_affinity: str = "None"
    session_affinity_timeout: int = 10800
    external_name: str = ""
    external_traffic_policy: str = "Cluster"  # issue 9 (L4): Cluster or Local, for type LoadBalancer
    kind = "Service"


@dataclass(frozen=True, slots=True)
class EndpointPort:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool = True  # conditions.ready: absent means ready (Kubernetes API convention)
    serving: bool = True
    terminating: bool = False
    target_ref_name: str = ""  # usually the Pod name
    node_name: str = ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    meta: Meta
    service_name: str  # from the label kubernetes.io/service-name
    address_type: str = "IPv4"
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    kind = "EndpointSlice"


@dataclass(frozen=True, slots=True)
class IngressClass:
    meta: Meta
    controller: str = ""
    is_default: bool = False  # annotation ingressclass.kubernetes.io/is-default-class: "true"
    kind = "IngressClass"


@dataclass(frozen=True, slots=True)
class Secret:
    meta: Meta
    type: str = "Opaque"
    data: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    kind = "Secret"


@dataclass(frozen=True, slots=True)
class ConfigMap:
    meta: Meta
    data: Mapping[str, str] = field(default_factory=_empty)
    kind = "ConfigMap"


@dataclass(frozen=True, slots=True)
class Pod:
    """Only what capacity weights need (`config.weights`): the Pod's CPU request."""

    meta: Meta
    cpu_millis: int = 0  # spec.containers[].resources.requests.cpu summed, in millicores; 0 = none requested
    kind = "Pod"


KubeObject = Ingress | Service | EndpointSlice | IngressClass | Secret | ConfigMap | Pod
