"""Which Ingresses are ours: class selection, as ingress-nginx does it.

An Ingress is served when, in this order:
1. `spec.ingressClassName` is set: it equals `options.ingress_class`, unless an IngressClass object of that
   name exists whose `spec.controller` is not `options.controller` (then another controller owns the name).
   The name alone is enough when no IngressClass object exists: ingress-nginx matches by name too, and in file
   mode nobody writes IngressClass objects.
2. no ingressClassName, and the legacy annotation `kubernetes.io/ingress.class` is set: it equals
   `options.ingress_class`.
3. no class at all: `options.watch_without_class` is set, or the IngressClass named `options.ingress_class`
   exists, belongs to `options.controller` and is marked default
   (`ingressclass.kubernetes.io/is-default-class: "true"`). The controller check is the same as in 1: a
   default class run by another controller does not make unclassed Ingresses ours.

Ingresses of other classes are not problems: in a cluster with several controllers they are the normal case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyngress.config.streams import NO_STREAMS, StreamOptions
from pyngress.model import Ingress, IngressClass

LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


@dataclass(frozen=True, slots=True)
class CompileOptions:
    ingress_class: str = "pyngress"
    watch_without_class: bool = False
    configmap: str = "pyngress"  # "namespace/name", or "name": that name in any namespace
    controller: str = "pyngress.io/ingress-controller"
    streams: StreamOptions = NO_STREAMS  # issue 9 (L4): tcp/udp services ConfigMaps, LoadBalancer Services
    default_ssl_certificate: str = ""  # --default-ssl-certificate "namespace/name" (issue 4, config.tls)


def served_ingresses(
    ingresses: Iterable[Ingress], classes: Mapping[str, IngressClass], options: CompileOptions
) -> list[Ingress]:
    """The Ingresses this controller serves, in the order given."""
    return [ing for ing in ingresses if is_served(ing, classes, options)]


def is_served(ingress: Ingress, classes: Mapping[str, IngressClass], options: CompileOptions) -> bool:
    ours = classes.get(options.ingress_class)
    if ours is not None and ours.controller != options.controller:
        ours = None
    if ingress.ingress_class_name is not None:
        name_matches = ingress.ingress_class_name == options.ingress_class
        return name_matches and (ours is not None or options.ingress_class not in classes)
    legacy = ingress.meta.annotations.get(LEGACY_CLASS_ANNOTATION)
    if legacy is not None:
        return legacy == options.ingress_class
    return options.watch_without_class or (ours is not None and ours.is_default)
