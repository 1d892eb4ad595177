"""The API resources the controller reads, and how their URLs are spelled. Pure.

A `Resource` names one kind the way the API server's REST paths do (group, version, plural) and says whether
it is namespaced. Core kinds (group "") live under `/api/v1`, the others under `/apis/<group>/<version>`
(Kubernetes API concepts, "Resource URIs"). Selectors are server-side: a Secret watch leaves out Helm's
release records (`type!=helm.sh/release.v1`, often the bulk of a cluster's Secrets and never TLS material),
and the ConfigMap watch reads only the controller's own ConfigMap (`metadata.name=<name>`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

HELM_RELEASE_SELECTOR = "type!=helm.sh/release.v1"


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True
    field_selector: str = ""
    label_selector: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str = "") -> str:
        """The list/watch/create path; `namespace` "" means every namespace (or a cluster-scoped kind)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str, name: str, subresource: str = "") -> str:
        path = f"{self.collection_path(namespace if self.namespaced else '')}/{name}"
        return f"{path}/{subresource}" if subresource else path

    def selected(self, field_selector: str) -> Resource:
        """This resource with one more field selector requirement (comma means AND)."""
        joined = ",".join(s for s in (self.field_selector, field_selector) if s)
        return replace(self, field_selector=joined)


INGRESS = Resource("Ingress", "networking.k8s.io", "v1", "ingresses")
INGRESS_CLASS = Resource("IngressClass", "networking.k8s.io", "v1", "ingressclasses", namespaced=False)
SERVICE = Resource("Service", "", "v1", "services")
ENDPOINT_SLICE = Resource("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices")
SECRET = Resource("Secret", "", "v1", "secrets", field_selector=HELM_RELEASE_SELECTOR)
CONFIG_MAP = Resource("ConfigMap", "", "v1", "configmaps")
POD = Resource("Pod", "", "v1", "pods")
LEASE = Resource("Lease", "coordination.k8s.io", "v1", "leases")


def configmap_resource(wanted: str) -> tuple[Resource, str]:
    """The ConfigMap resource narrowed to `--configmap` ("ns/name" or "name"), and the namespace to watch
    ("" = all). Watching one object by name keeps unrelated ConfigMaps (often large) out of memory."""
    namespace, _, name = wanted.rpartition("/")
    return CONFIG_MAP.selected(f"metadata.name={name}"), namespace


def configmap_watches(wanted: tuple[str, ...], watched_namespace: str) -> list[tuple[str, Resource, str]]:
    """One (slot, resource, namespace) watch per distinct ConfigMap name in `wanted` ("ns/name" or "name"), the
    first under the slot "ConfigMap" (the controller's settings), the others under "ConfigMap ns/name". A name
    without namespace is looked for in the watched namespace ("" = all)."""
    watches: list[tuple[str, Resource, str]] = []
    seen: set[tuple[str, str]] = set()
    for name in wanted:
        resource, namespace = configmap_resource(name)
        namespace = namespace or watched_namespace
        if (resource.field_selector, namespace) in seen:
            continue
        seen.add((resource.field_selector, namespace))
        watches.append(("ConfigMap" if not watches else f"ConfigMap {name}", resource, namespace))
    return watches
