"""Kubernetes objects -> `Snapshot`: the pure translation the control plane runs on every change.

`compile_snapshot(objects, options, version=, problems=)` never raises on bad objects: whatever is wrong becomes
a Problem on that object and the rest is served. Steps:

1. Index the objects by kind and namespace/name. A second object with the same kind and key (the same Ingress
   in two files) is ignored with a warning; the first one read wins, and `load_paths` reads in sorted order.
2. Select our Ingresses (`selection`), oldest first: creationTimestamp ascending, then namespace/name. Age
   decides every conflict, as in ingress-nginx, so adding a new Ingress can never take over a live path.
   Problems found while parsing an Ingress of another class are dropped: not ours to judge.
3. One Route per (host, path) of each rule with a service backend. The same host + path + pathType already
   taken by an older Ingress: the newer one gets a warning naming the winner and that path is not added.
   Several Ingresses for one host otherwise merge. A `resource` backend is valid but we cannot serve it: a
   warning, and the path is not added (so the request falls through to other rules or the default backend).
4. Backends are resolved once per key "namespace/service:port" (`endpoints`). A backend that cannot work
   (missing Service or port, ExternalName) keeps its routes, which answer 503, and gives one error per
   Ingress and backend, at the first path that uses it.
5. The default backend is the one of the oldest served Ingress that has one; the others get a warning.
6. Settings come from the ConfigMap named by `options.configmap` ("ns/name", or "name" in any namespace; the
   first namespace in sorted order wins). No such ConfigMap means defaults, and no problem.

Field paths in the Problems of steps 3-5 use the indices of the model's tuples, which are the manifest's: the
parser leaves a placeholder where it rejected a rule or path (see `ingress`), and we skip placeholders here.

Problems are sorted by file, object and field (the order a reader fixes them in), duplicates removed.
Everything in the Snapshot is a tuple or MappingProxyType built in sorted order, so equal inputs give equal
Snapshots and a reload that changes nothing compares equal (after replacing `version`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pyngress.config.annotations import affinity_spec, balance_spec
from pyngress.config.endpoints import backend_key, resolve_backend
from pyngress.config.flow import flow_spec
from pyngress.config.health_backends import ingress_health, with_ingress_health
from pyngress.config.health_notes import ingress_retry
from pyngress.config.ingress import is_rejected
from pyngress.config.loader import load_paths
from pyngress.config.log_annotations import access_log_enabled
from pyngress.config.protocols import backend_protocol
from pyngress.config.selection import CompileOptions, served_ingresses
from pyngress.config.settings import parse_settings
from pyngress.config.streams import compile_streams
from pyngress.config.tls import TLSCompiler
from pyngress.model import (
    DEFAULT_BALANCE,
    NO_AFFINITY,
    AffinitySpec,
    Backend,
    BalanceSpec,
    ConfigMap,
    EndpointSlice,
    HealthSpec,
    Ingress,
    IngressBackend,
    IngressClass,
    KubeObject,
    PathType,
    Pod,
    Problem,
    ProxySettings,
    Route,
    Secret,
    Service,
    Snapshot,
)
from pyngress.model.flow import FlowSpec

_DIGITS = re.compile(r"(\d+)")
_TYPE_ORDER = {PathType.EXACT: 0, PathType.PREFIX: 1, PathType.IMPLEMENTATION_SPECIFIC: 2}


@dataclass(slots=True)
class _Index:
    ingresses: list[Ingress] = field(default_factory=list)
    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    slices: defaultdict[tuple[str, str], list[EndpointSlice]] = field(default_factory=lambda: defaultdict(list))
    classes: dict[str, IngressClass] = field(default_factory=dict)
    configmaps: list[ConfigMap] = field(default_factory=list)
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)  # for weight-by: cpu (`weights`)
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)  # for TLS (`tls`)
    problems: list[Problem] = field(default_factory=list)


def compile_snapshot(
    objects: Iterable[KubeObject], options: CompileOptions, *, version: int = 1, problems: Iterable[Problem] = (),
    now: float | None = None,
) -> Snapshot:
    """`now` (epoch seconds) is what certificates must not have expired by; None does not check expiry."""
    index = _index(objects)
    settings, setting_problems = parse_settings(select_configmap(index.configmaps, options.configmap))
    tls = TLSCompiler(index.secrets, settings, options.default_ssl_certificate, now)
    builder = _Builder(index, settings, tls)
    served = sorted(served_ingresses(index.ingresses, index.classes, options), key=_age)
    tls.add_ingresses(served)
    builder.ingress_health, health_problems = ingress_health(served)  # issue 7
    builder.problems += health_problems
    for ingress in served:
        builder.add(ingress)
    others = {i.meta.key for i in index.ingresses} - {i.meta.key for i in served}
    streams, stream_problems = compile_streams(  # issue 9 (L4): TCP/UDP services
        lambda name: select_configmap(index.configmaps, name), index.services, index.slices, index.pods,
        options.streams, settings)
    found = [*_not_about(others, problems), *index.problems, *builder.problems, *setting_problems,
             *tls.problems, *stream_problems]
    return Snapshot(
        version=version,
        routes=tuple(sorted(builder.routes.values(), key=_route_order)),
        default_backend=builder.default[0] if builder.default else None,
        default_balance=builder.default[2] if builder.default else DEFAULT_BALANCE,
        default_affinity=builder.default[3] if builder.default else NO_AFFINITY,
        backends=MappingProxyType(dict(sorted(builder.backends.items()))),
        settings=settings,
        problems=tuple(sorted(dict.fromkeys(found), key=problem_order)),
        streams=streams,
        tls=tls.finish(builder.routes.values()),
        default_flow=builder.default_flow[0] if builder.default else None,
        default_max_body=builder.default_flow[1] if builder.default else settings.proxy_body_size,
    )


def build_from_paths(paths: Sequence[str | Path], options: CompileOptions, *, version: int = 1,
                     now: float | None = None) -> Snapshot:
    """`load_paths` + `compile_snapshot`: what file mode and `pyngress check` run."""
    objects, problems = load_paths(paths)
    return compile_snapshot(objects, options, version=version, problems=problems, now=now)


def _not_about(ingresses: set[str], problems: Iterable[Problem]) -> list[Problem]:
    """The problems that are not about one of `ingresses` (Ingresses of other classes: none of our business)."""
    return [p for p in problems if p.kind != "Ingress" or f"{p.namespace}/{p.name}" not in ingresses]


def select_configmap(configmaps: Iterable[ConfigMap], wanted: str) -> ConfigMap | None:
    namespace, _, name = wanted.rpartition("/")
    matches = [cm for cm in configmaps if cm.meta.name == name and namespace in ("", cm.meta.namespace)]
    return min(matches, key=lambda cm: cm.meta.namespace, default=None)


def _index(objects: Iterable[KubeObject]) -> _Index:
    index = _Index()
    first: dict[tuple[str, str], KubeObject] = {}
    for obj in objects:
        seen = first.setdefault((obj.kind, obj.meta.key), obj)
        if seen is not obj:
            message = f"defined again (first in {seen.meta.source or 'the cluster'}): this copy is ignored"
            index.problems.append(_problem(obj, "metadata.name", message, "warning"))
            continue
        _add(index, obj)
    return index


def _add(index: _Index, obj: KubeObject) -> None:
    match obj:
        case Ingress():
            index.ingresses.append(obj)
        case Service():
            index.services[(obj.meta.namespace, obj.meta.name)] = obj
        case EndpointSlice():
            index.slices[(obj.meta.namespace, obj.service_name)].append(obj)
        case IngressClass():
            index.classes[obj.meta.name] = obj
        case ConfigMap():
            index.configmaps.append(obj)
        case Pod():
            index.pods[(obj.meta.namespace, obj.meta.name)] = obj
        case Secret():
            index.secrets[(obj.meta.namespace, obj.meta.name)] = obj


class _Builder:
    """Accumulates routes, backends and problems over the served Ingresses, oldest first."""

    def __init__(self, index: _Index, settings: ProxySettings, tls: TLSCompiler) -> None:
        self._index = index
        self._settings = settings
        self._tls = tls
        self.routes: dict[tuple[str, str, PathType], Route] = {}
        self.backends: dict[str, Backend] = {}
        self.default: tuple[Backend, str, BalanceSpec, AffinitySpec] | None = None
        self.problems: list[Problem] = []
        self._resolved: dict[str, tuple[Backend, str, list[Problem]]] = {}
        self._reported: set[tuple[str, str]] = set()  # (ingress, backend key) already given a problem
        self.default_flow: tuple[FlowSpec | None, int] = (None, settings.proxy_body_size)  # issue 5
        self.ingress_health: dict[str, HealthSpec] = {}  # backend key -> health asked by an Ingress (issue 7)

    def add(self, ingress: Ingress) -> None:
        spec, problems = balance_spec(ingress, self._settings.load_balance)
        affinity, affinity_problems = affinity_spec(ingress, self._settings)
        retry, retry_problems = ingress_retry(ingress, self._settings)  # issue 7
        self.problems += problems + affinity_problems + retry_problems
        access_log, log_problems = access_log_enabled(ingress)  # issue 8
        self.problems += log_problems
        protocol, protocol_problems = backend_protocol(ingress)  # issue 4
        self.problems += protocol_problems
        flow, max_body, flow_problems = flow_spec(ingress, self._settings)
        self.problems += flow_problems
        if ingress.default_backend is not None and self.default is None:
            self.default_flow = (flow, max_body)
        if ingress.default_backend is not None:
            self._add_default(ingress, ingress.default_backend, spec,
                              self._affinity(ingress, ingress.default_backend, affinity))
        for i, rule in enumerate(ingress.rules):
            host = rule.host.lower()
            for j, path in enumerate(rule.paths):
                if is_rejected(path):
                    continue  # already reported by the parser
                at = f"spec.rules[{i}].http.paths[{j}]"
                route_key = (host, path.path, path.path_type)
                if route_key in self.routes:
                    winner = self.routes[route_key].ingress
                    message = (
                        f"{host or '*'} {path.path} ({path.path_type.value}) is already served by the "
                        f"older Ingress {winner}: this path is ignored"
                    )
                    self.problems.append(_problem(ingress, at, message, "warning"))
                    continue
                backend = self._backend(ingress, path.backend, f"{at}.backend")
                if backend is not None:
                    self.routes[route_key] = Route(host, path.path, path.path_type, backend, ingress.meta.key,
                                                   spec, self._affinity(ingress, path.backend, affinity),
                                                   https=self._tls.https_policy(ingress, host),
                                                   upstream_tls=self._tls.upstream_tls(ingress, backend.service),
                                                   backend_protocol=protocol,
                                                   access_log=access_log, flow=flow, max_body=max_body,
                                                   retry=retry)

    def _affinity(self, ingress: Ingress, ref: IngressBackend, asked: AffinitySpec) -> AffinitySpec:
        """The Ingress's own affinity, else the Service's `sessionAffinity: ClientIP` (as kube-proxy)."""
        if asked.kind or ref.service is None:
            return asked
        svc = self._index.services.get((ingress.meta.namespace, ref.service.name))
        if svc is None or svc.session_affinity != "ClientIP":
            return asked
        return AffinitySpec(kind="client-ip", timeout=float(svc.session_affinity_timeout),
                            table_size=self._settings.affinity_table_size)

    def _add_default(self, ingress: Ingress, ref: IngressBackend, spec: BalanceSpec,
                     affinity: AffinitySpec) -> None:
        if self.default is not None:
            message = f"ignored: the older Ingress {self.default[1]} already sets the default backend"
            self.problems.append(_problem(ingress, "spec.defaultBackend", message, "warning"))
            return
        backend = self._backend(ingress, ref, "spec.defaultBackend")
        if backend is not None:
            self.default = (backend, ingress.meta.key, spec, affinity)

    def _backend(self, ingress: Ingress, ref: IngressBackend, at: str) -> Backend | None:
        if ref.service is None:
            what = f"{ref.resource.kind} {ref.resource.name}" if ref.resource else "none given"
            message = f"resource backends ({what}) are not supported: not served"
            self.problems.append(_problem(ingress, f"{at}.resource", message, "warning"))
            return None
        key = backend_key(ingress.meta.namespace, ref.service)
        if key not in self._resolved:
            namespace, index = ingress.meta.namespace, self._index
            self._resolved[key] = with_ingress_health(
                resolve_backend(namespace, ref.service, index.services, index.slices, index.pods),
                self.ingress_health)
            self.problems += self._resolved[key][2]  # the Service's weights: once per backend
        backend, bad_field, _ = self._resolved[key]
        self.backends[key] = backend
        if backend.problem and (ingress.meta.key, backend.key) not in self._reported:
            self._reported.add((ingress.meta.key, backend.key))
            message = f"{backend.problem}: requests get 503"
            self.problems.append(_problem(ingress, f"{at}.service.{bad_field}", message))
        return backend


def problem_order(problem: Problem) -> tuple[str, str, str, str, list[str | int]]:
    """By file, then object, then field with numbers compared as numbers (paths[10] after paths[9])."""
    # split() with a group alternates text and digit runs: odd items are the numbers
    field = [int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(problem.field))]
    return problem.source, problem.kind, problem.namespace, problem.name, field


def _problem(obj: KubeObject, at: str, message: str, severity: str = "error") -> Problem:
    meta = obj.meta
    return Problem(obj.kind, meta.namespace, meta.name, at, message, meta.source, severity)


def _age(ingress: Ingress) -> tuple[str, str, str]:
    return ingress.meta.creation_timestamp, ingress.meta.namespace, ingress.meta.name


def _route_order(route: Route) -> tuple[bool, str, str, int]:
    # no-host rules ("*" in check's table) last: they are what a request falls through to
    return route.host == "", route.host, route.path, _TYPE_ORDER[route.path_type]
