"""Class selection: which Ingresses compile_snapshot serves for a given CompileOptions."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from pyngress.config import CompileOptions, compile_snapshot
from pyngress.model import (
    HTTPIngressPath,
    Ingress,
    IngressBackend,
    IngressClass,
    IngressRule,
    KubeObject,
    Meta,
    PathType,
    ServiceBackendRef,
)

OURS = "pyngress.io/ingress-controller"
OTHER = "k8s.io/ingress-nginx"


def ingress(class_name: str | None = None, legacy: str | None = None, name: str = "site") -> Ingress:
    annotations = MappingProxyType({"kubernetes.io/ingress.class": legacy} if legacy is not None else {})
    path = HTTPIngressPath("/", PathType.PREFIX, IngressBackend(ServiceBackendRef("web", port_number=80)))
    return Ingress(Meta(name, annotations=annotations), class_name, rules=(IngressRule("foo.com", (path,)),))


def ingress_class(name: str, controller: str = OURS, default: bool = False) -> IngressClass:
    return IngressClass(Meta(name, namespace=""), controller, default)


def served(objects: list[KubeObject], **options: object) -> bool:
    snapshot = compile_snapshot(objects, CompileOptions(**options))  # type: ignore[arg-type]
    assert not [p for p in snapshot.problems if p.severity == "error" and "not found" not in p.message]
    return bool(snapshot.routes)


@pytest.mark.parametrize(
    ("objects", "options", "expected"),
    [
        pytest.param([ingress("pyngress")], {}, True, id="class-name-matches-without-ingressclass-object"),
        pytest.param([ingress("pyngress"), ingress_class("pyngress")], {}, True, id="class-name-with-our-class"),
        pytest.param(
            [ingress("pyngress"), ingress_class("pyngress", OTHER)],
            {},
            False,
            id="class-name-owned-by-another-controller",
        ),
        pytest.param([ingress("nginx")], {}, False, id="other-class-name-is-ignored"),
        pytest.param(
            [ingress("nginx")],
            {"watch_without_class": True},
            False,
            id="watch-without-class-does-not-take-other-classes",
        ),
        pytest.param([ingress("internal")], {"ingress_class": "internal"}, True, id="configured-class-name"),
        pytest.param([ingress(legacy="pyngress")], {}, True, id="legacy-annotation-matches"),
        pytest.param(
            [ingress(legacy="nginx")], {"watch_without_class": True}, False, id="legacy-annotation-for-other-class"
        ),
        pytest.param([ingress("nginx", legacy="pyngress")], {}, False, id="class-name-wins-over-annotation"),
        pytest.param([ingress()], {}, False, id="no-class-is-ignored-by-default"),
        pytest.param([ingress()], {"watch_without_class": True}, True, id="no-class-with-watch-without-class"),
        pytest.param(
            [ingress(), ingress_class("pyngress", default=True)], {}, True, id="no-class-with-our-default-class"
        ),
        pytest.param(
            [ingress(), ingress_class("pyngress", default=False)],
            {},
            False,
            id="no-class-with-our-non-default-class",
        ),
        pytest.param(
            [ingress(), ingress_class("pyngress", OTHER, default=True)],
            {},
            False,
            id="no-class-with-default-class-of-other-controller",
        ),
        pytest.param(
            [ingress(), ingress_class("nginx", OTHER, default=True)],
            {},
            False,
            id="no-class-with-other-default-class",
        ),
        pytest.param(
            [ingress("pyngress"), ingress_class("pyngress", "example.com/custom")],
            {"controller": "example.com/custom"},
            True,
            id="configured-controller-name",
        ),
    ],
)
def test_class_selection(objects: list[KubeObject], options: dict[str, object], expected: bool) -> None:
    assert served(objects, **options) is expected


def test_ignored_ingresses_are_not_problems() -> None:
    snapshot = compile_snapshot([ingress("nginx"), ingress(name="unclassed")], CompileOptions())
    assert snapshot.routes == () and snapshot.problems == ()
