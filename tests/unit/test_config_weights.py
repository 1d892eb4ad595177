"""Capacity weights: CPU quantities, Pod requests, the Service's endpoint-weights and weight-by annotations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pyngress.config import CompileOptions, compile_snapshot, format_check, parse_manifest
from pyngress.config.weights import MAX_WEIGHT, cpu_millicores, parse_endpoint_weights, reduce_weights
from pyngress.model import KubeObject, Pod, Problem, Snapshot

WEIGHTS = "pyngress.io/endpoint-weights"
WEIGHT_BY = "pyngress.io/weight-by"


def compile_docs(docs: Sequence[dict[str, Any]]) -> Snapshot:
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for doc in docs:
        obj, found = parse_manifest(doc, "t.yaml")
        problems += found
        if obj is not None:
            objects.append(obj)
    return compile_snapshot(objects, CompileOptions(), problems=problems)


def pod(name: str, *cpus: str | None) -> dict[str, Any]:
    containers = [{"name": f"c{i}", **({"resources": {"requests": {"cpu": c}}} if c is not None else {})}
                  for i, c in enumerate(cpus)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}}


def service_docs(annotations: dict[str, str], pods: int) -> list[dict[str, Any]]:
    """Ingress -> Service web (with `annotations`) -> one slice of `pods` endpoints 10.0.0.i named pod-i."""
    path = {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
    endpoints = [{"addresses": [f"10.0.0.{i}"], "targetRef": {"kind": "Pod", "name": f"pod-{i}"}}
                 for i in range(1, pods + 1)]
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "site"},
         "spec": {"ingressClassName": "pyngress", "rules": [{"http": {"paths": [path]}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "annotations": annotations},
         "spec": {"ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}}, "endpoints": endpoints},
    ]


def weights(annotations: dict[str, str], pods: int, *extra: dict[str, Any]) -> tuple[list[int], list[Problem]]:
    snapshot = compile_docs([*service_docs(annotations, pods), *extra])
    (route,) = snapshot.routes
    return [e.weight for e in route.backend.endpoints], list(snapshot.problems)


def by_cpu(*cpus: str) -> tuple[list[int], list[Problem]]:
    return weights({WEIGHT_BY: "cpu"}, len(cpus), *(pod(f"pod-{i}", c) for i, c in enumerate(cpus, start=1)))


def messages(problems: Sequence[Problem]) -> list[tuple[str, str, str]]:
    return [(p.severity, p.field, p.message) for p in problems]


# -- CPU quantities ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "millis"), [
    ("500m", 500), ("2", 2000), ("1.5", 1500), ("0.25", 250), (".5", 500), ("1.", 1000), ("  250m ", 250),
    ("100u", 1), ("1n", 1), ("0", 0), ("+1", 1000), ("2k", 2_000_000), ("1Ki", 1_024_000), ("5e-1", 500),
    ("1E3", 1_000_000), ("1E", 10**21), (2, 2000), (0.5, 500), (1e-05, 1),
])
def test_cpu_quantities_in_millicores_rounded_up(value: str | float, millis: int) -> None:
    assert cpu_millicores(value) == millis


@pytest.mark.parametrize("value", [
    "", "m", "abc", "1.5.2", "500 m", "1mi", "1KI", "1e", "1e1.5", "0x10", "1_000", "-1", "-500m", "1e99",
    "\uff11", True, None, [1], {"cpu": 1},
])
def test_malformed_or_negative_quantities_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"quantity|negative|out of range"):
        cpu_millicores(value)


def test_pod_cpu_is_summed_over_containers_and_init_containers_are_left_out() -> None:
    doc = pod("p", "500m", "1.5", None)
    doc["spec"]["initContainers"] = [{"name": "init", "resources": {"requests": {"cpu": "8"}}}]
    obj, problems = parse_manifest(doc)
    assert isinstance(obj, Pod) and (obj.meta.key, obj.cpu_millis, problems) == ("default/p", 2000, [])


def test_a_container_with_only_a_limit_requests_its_limit() -> None:
    doc = pod("p", "1")
    doc["spec"]["containers"].append({"name": "side", "resources": {"limits": {"cpu": "250m"}}})
    obj, problems = parse_manifest(doc)
    assert isinstance(obj, Pod) and obj.cpu_millis == 1250 and problems == []


def test_a_pod_without_requests_has_no_capacity() -> None:
    obj, _ = parse_manifest({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
    assert isinstance(obj, Pod) and obj.cpu_millis == 0


def test_a_bad_quantity_is_a_problem_on_the_pod_naming_the_field() -> None:
    obj, problems = parse_manifest(pod("p", "1", "lots"), "pods.yaml")
    assert obj is None
    assert [str(p) for p in problems] == [
        "pods.yaml: Pod default/p: spec.containers[1].resources.requests.cpu: "
        "'lots' is not a quantity (like 500m, 2 or 1.5)"]


# -- pyngress.io/endpoint-weights ----------------------------------------------------------------------


def test_explicit_weights_by_pod_name_and_by_address_others_keep_one() -> None:
    assert weights({WEIGHTS: "pod-1=3, 10.0.0.2=5"}, 3) == ([3, 5, 1], [])


def test_the_address_wins_over_the_pod_name() -> None:
    assert weights({WEIGHTS: "pod-1=3,10.0.0.1=7"}, 2)[0] == [7, 1]


def test_weight_zero_drains_the_endpoint() -> None:
    assert weights({WEIGHTS: "pod-2=0"}, 2) == ([1, 0], [])


@pytest.mark.parametrize(("text", "why"), [
    ("pod-1", "'pod-1' is not name=weight"),
    ("=3", "'=3' is not name=weight"),
    ("pod-1=-1", "'pod-1=-1': the weight must be a whole number from 0 to 1000"),
    ("pod-1=1.5", "'pod-1=1.5': the weight must be a whole number from 0 to 1000"),
    ("pod-1=1001", "'pod-1=1001': the weight must be a whole number from 0 to 1000"),
    ("pod-1=2,pod-1=3", "'pod-1' is given twice"),
])
def test_a_malformed_entry_makes_the_annotation_an_error_and_it_is_ignored(text: str, why: str) -> None:
    found, problems = weights({WEIGHTS: f"pod-2=4, {text}"}, 2)
    assert found == [1, 1]
    field = f"metadata.annotations[{WEIGHTS}]"
    assert messages(problems) == [("error", field, f"{why}; the annotation is ignored")]
    assert (problems[0].kind, problems[0].name) == ("Service", "web")


def test_empty_items_and_spaces_are_tolerated() -> None:
    assert parse_endpoint_weights(" a = 2 ,, b=0, ") == {"a": 2, "b": 0}
    assert parse_endpoint_weights("") == {}


def test_a_name_that_matches_no_ready_endpoint_is_a_warning() -> None:
    found, problems = weights({WEIGHTS: "pod-1=2, web-old-x7=3"}, 2)
    assert found == [2, 1]
    assert messages(problems) == [("warning", f"metadata.annotations[{WEIGHTS}]", "'web-old-x7' names no ready "
                                   "endpoint, by Pod name or address (Pod names change when Pods are replaced)")]


def test_the_ingress_nginx_prefix_is_not_read() -> None:
    assert weights({"nginx.ingress.kubernetes.io/endpoint-weights": "pod-1=3",
                    "nginx.ingress.kubernetes.io/weight-by": "cpu"}, 2) == ([1, 1], [])


# -- pyngress.io/weight-by: cpu ------------------------------------------------------------------------


def test_weights_follow_cpu_requests_divided_by_their_gcd() -> None:
    assert by_cpu("1", "1", "2", "4") == ([1, 1, 2, 4], [])
    assert by_cpu("500m", "1") == ([1, 2], [])
    assert by_cpu("500m", "1", "1.5") == ([1, 2, 3], [])
    assert by_cpu("2", "2") == ([1, 1], [])


def test_a_pod_summed_over_containers_weighs_its_total() -> None:
    found, _ = weights({WEIGHT_BY: "CPU "}, 2, pod("pod-1", "1", "1"), pod("pod-2", "500m"))
    assert found == [4, 1]


def test_a_missing_pod_gets_the_median_of_the_others_and_a_warning() -> None:
    found, problems = weights({WEIGHT_BY: "cpu"}, 5, *(pod(f"pod-{i}", c) for i, c in enumerate("1124", start=1)))
    assert found == [1, 1, 2, 4, 1]  # lower median of 1,1,2,4
    assert messages(problems) == [("warning", f"metadata.annotations[{WEIGHT_BY}]", "endpoint 10.0.0.5 names "
                                   "Pod pod-5, which was not found: weight 1 (the median of the others)")]


def test_a_pod_without_a_cpu_request_gets_the_median_of_the_others() -> None:
    found, problems = weights({WEIGHT_BY: "cpu"}, 4, pod("pod-1", "1"), pod("pod-2", "3"), pod("pod-3", "4"),
                              pod("pod-4", None))
    assert found == [1, 3, 4, 3]
    assert "names Pod pod-4, which requests no CPU: weight 3 (the median of the others)" in problems[0].message


def test_without_any_cpu_request_every_endpoint_weighs_one() -> None:
    found, problems = weights({WEIGHT_BY: "cpu"}, 2)
    assert found == [1, 1]
    assert [p.message for p in problems] == [
        f"endpoint 10.0.0.{i} names Pod pod-{i}, which was not found: weight 1 (no endpoint has a CPU request)"
        for i in (1, 2)]


def test_explicit_weights_win_over_cpu_for_the_endpoints_they_name() -> None:
    cpus = (pod("pod-1", "1"), pod("pod-2", "2"), pod("pod-3", "3"))
    found, problems = weights({WEIGHT_BY: "cpu", WEIGHTS: "pod-3=0"}, 3, *cpus)
    assert (found, problems) == ([1, 2, 0], [])
    found, problems = weights({WEIGHT_BY: "cpu", WEIGHTS: "pod-1=5"}, 3, pod("pod-2", "2"), pod("pod-3", "3"))
    assert (found, problems) == ([5, 2, 3], [])  # pod-1 has no Pod, but needs none: no warning


def test_another_weight_by_is_an_error_and_ignored() -> None:
    found, problems = weights({WEIGHT_BY: "memory"}, 2, pod("pod-1", "1"), pod("pod-2", "2"))
    assert found == [1, 1]
    assert messages(problems) == [("error", f"metadata.annotations[{WEIGHT_BY}]", "'memory' is not one of cpu; "
                                   "ignored")]


def test_a_bad_pod_is_reported_and_its_endpoint_weighed_as_unknown() -> None:
    found, problems = weights({WEIGHT_BY: "cpu"}, 2, pod("pod-1", "2"), pod("pod-2", "two"))
    assert found == [1, 1]
    assert [(p.kind, p.name, p.severity) for p in problems] == [("Pod", "pod-2", "error"),
                                                                ("Service", "web", "warning")]


def test_weights_over_the_cap_are_scaled_in_proportion() -> None:
    assert reduce_weights([1, 4000]) == [1, 1000]
    assert reduce_weights([3, 2000, 4000]) == [1, 500, 1000]
    assert reduce_weights([1000, 1001]) == [999, 1000]
    assert reduce_weights([MAX_WEIGHT, 1]) == [MAX_WEIGHT, 1]
    assert reduce_weights([2000, 4000, 6000]) == [1, 2, 3]
    assert by_cpu("1m", "4")[0] == [1, 1000]


def test_equal_inputs_give_equal_snapshots_whatever_the_order() -> None:
    docs = [*service_docs({WEIGHT_BY: "cpu", WEIGHTS: "pod-1=2"}, 3), pod("pod-2", "1"), pod("pod-3", "250m")]
    assert compile_docs(docs).routes == compile_docs(docs[::-1]).routes


# -- pyngress check ------------------------------------------------------------------------------------


def test_check_shows_weights_other_than_one() -> None:
    docs = [*service_docs({WEIGHT_BY: "cpu"}, 2), pod("pod-1", "4"), pod("pod-2", "1")]
    report = format_check(compile_docs(docs))
    assert "10.0.0.1:8080\u00d74, +1 more" in report
    assert "10.0.0.1:8080\u00d7" not in format_check(compile_docs(service_docs({}, 2)))
    drained = format_check(compile_docs(service_docs({WEIGHTS: "10.0.0.1=0"}, 1)))
    assert "10.0.0.1:8080\u00d70  " in drained
