"""The data half of the test API server: its kinds, discovery documents, selectors and patches. Pure.

Split from `fake_apiserver` (the HTTP half) so each stays readable; see that module for what the fake does.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = [
    Kind("", "v1", "Namespace", "namespaces", namespaced=False, status=True),
    Kind("", "v1", "Service", "services", status=True),
    Kind("", "v1", "Secret", "secrets"),
    Kind("", "v1", "ConfigMap", "configmaps"),
    Kind("", "v1", "Pod", "pods", status=True),
    Kind("", "v1", "ServiceAccount", "serviceaccounts"),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", status=True),
    Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    Kind("coordination.k8s.io", "v1", "Lease", "leases"),
    Kind("apps", "v1", "Deployment", "deployments", status=True),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", status=True),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    Kind("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
]
SHORT = {"services": ["svc"], "ingresses": ["ing"], "configmaps": ["cm"], "namespaces": ["ns"], "pods": ["po"],
         "serviceaccounts": ["sa"], "deployments": ["deploy"], "poddisruptionbudgets": ["pdb"]}
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"


def group_list(only: str | None = None) -> Obj:
    groups: dict[str, list[str]] = {}
    for k in KINDS:
        if k.group and k.version not in groups.setdefault(k.group, []):
            groups[k.group].append(k.version)
    entries = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
               for g, vs in groups.items()]
    if only is not None:
        return {"kind": "APIGroup", "apiVersion": "v1", **next(e for e in entries if e["name"] == only)}
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": entries}


def resource_list(group: str, version: str) -> Obj:
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    resources = []
    for k in KINDS:
        if (k.group, k.version) != (group, version):
            continue
        resources.append({"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
                          "kind": k.kind, "verbs": verbs, "shortNames": SHORT.get(k.plural, [])})
        if k.status:
            resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": ["get", "patch", "update"]})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def selected(obj: Obj, labels: str, fields: str) -> bool:
    return _labels_match(obj.get("metadata", {}).get("labels") or {}, labels) and _fields_match(obj, fields)


def _split(selector: str) -> list[str]:
    return [p for p in re.split(r",(?![^(]*\))", selector) if p.strip()]


def _labels_match(labels: dict[str, str], selector: str) -> bool:
    for req in _split(selector):
        if m := _SET.match(req):
            values = {v.strip() for v in m.group(3).split(",")}
            inside = labels.get(m.group(1)) in values
            if inside != (m.group(2) == "in"):
                return False
        elif "!=" in req:
            k, v = (s.strip() for s in req.split("!=", 1))
            if labels.get(k) == v:
                return False
        elif "=" in req:
            k, v = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(k) != v:
                return False
        elif req.strip().startswith("!"):
            if req.strip()[1:] in labels:
                return False
        elif req.strip() not in labels:
            return False
    return True


def _fields_match(obj: Obj, selector: str) -> bool:
    for req in _split(selector):
        negate = "!=" in req
        path, value = (s.strip() for s in req.replace("!=", "=").replace("==", "=").split("=", 1))
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if (str(current if current is not None else "") == value) == negate:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


def strategic_merge(target: Any, patch: Any) -> Any:
    """The subset of strategic merge patch that `kubectl apply` sends for the kinds here: maps merge, null
    deletes, lists are replaced unless a `$setElementOrder/<list>` directive names their merge key (then
    items merge by that key, `$patch: delete` removes one, and the directive gives the order)."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return patch
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k.startswith("$"):
            continue
        if v is None:
            target.pop(k, None)
        elif isinstance(v, list) and f"$setElementOrder/{k}" in patch:
            target[k] = _merge_list(target.get(k) or [], v, patch[f"$setElementOrder/{k}"])
        elif isinstance(v, dict):
            target[k] = strategic_merge(target.get(k) if isinstance(target.get(k), dict) else {}, v)
        else:
            target[k] = v
    for k, order in patch.items():
        if k.startswith("$setElementOrder/") and k.split("/", 1)[1] not in patch:
            name = k.split("/", 1)[1]
            target[name] = _merge_list(target.get(name) or [], [], order)
    return target


def _merge_list(current: list[Any], patch: list[Any], order: list[Any]) -> list[Any]:
    if not order or not isinstance(order[0], dict):
        return patch
    key = next(iter(order[0]))
    items = {item.get(key): item for item in current if isinstance(item, dict)}
    for item in patch:
        if item.get("$patch") == "delete":
            items.pop(item.get(key), None)
        else:
            items[item.get(key)] = strategic_merge(copy.deepcopy(items.get(item.get(key), {})), item)
    ordered = [o[key] for o in order if o[key] in items]
    # items nobody mentions (added by another writer) stay, after the ordered ones
    return [items[k] for k in ordered] + [v for k, v in items.items() if k not in ordered]


def rbac_allows(rules: list[Obj], method: str, path: str, query: Any) -> bool:
    """Whether ClusterRole `rules` allow this request, with the API server's verb mapping (GET of a
    collection is list, or watch with watch=true; PUT update; POST create...)."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return True  # discovery, /version
    if not rest:
        return True
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"GET": "get" if named else ("watch" if query.get("watch") == "true" else "list"), "POST": "create",
            "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "")
    return any(group in r.get("apiGroups", ()) and resource in r.get("resources", ())
               and verb in r.get("verbs", ()) for r in rules)
