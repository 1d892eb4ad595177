"""Frozen dataclasses: the Kubernetes objects we read and the compiled Snapshot the runtime serves."""

from pyngress.model.objects import (
    ConfigMap,
    EndpointPort,
    EndpointSlice,
    HTTPIngressPath,
    Ingress,
    IngressBackend,
    IngressClass,
    IngressRule,
    IngressTLS,
    KubeObject,
    Meta,
    PathType,
    ResourceBackendRef,
    Secret,
    Service,
    ServiceBackendRef,
    ServicePort,
    SliceEndpoint,
)
from pyngress.model.settings import ProxySettings
from pyngress.model.snapshot import Backend, Endpoint, Problem, Route, Snapshot

__all__ = [
    "Backend", "ConfigMap", "Endpoint", "EndpointPort", "EndpointSlice", "HTTPIngressPath", "Ingress",
    "IngressBackend", "IngressClass", "IngressRule", "IngressTLS", "KubeObject", "Meta", "PathType", "Problem",
    "ProxySettings", "ResourceBackendRef", "Route", "Secret", "Service", "ServiceBackendRef", "ServicePort",
    "SliceEndpoint", "Snapshot",
]
