"""The test API server's own pure helpers: selectors and patches behave as the API server's do."""

from __future__ import annotations

from fake_api_data import merge_patch, rbac_allows, selected, strategic_merge

OBJ = {"metadata": {"name": "a", "namespace": "x", "labels": {"app": "web", "tier": "front"}}, "type": "Opaque"}


def test_label_selectors() -> None:
    assert selected(OBJ, "app=web,tier!=back", "")
    assert selected(OBJ, "app in (web, api),!missing", "")
    assert not selected(OBJ, "app notin (web)", "") and not selected(OBJ, "missing", "")
    assert selected(OBJ, "app==web", "") and not selected(OBJ, "tier=back", "")


def test_field_selectors() -> None:
    assert selected(OBJ, "", "metadata.name=a,metadata.namespace=x")
    assert selected(OBJ, "", "type!=helm.sh/release.v1")
    assert not selected({**OBJ, "type": "helm.sh/release.v1"}, "", "type!=helm.sh/release.v1")


def test_merge_patch_deletes_with_null_and_replaces_lists() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None}, "l": [3]}) == {"a": {"c": 2},
                                                                                           "l": [3]}


def test_strategic_merge_by_key_with_element_order() -> None:
    live = {"spec": {"ports": [{"port": 9090, "name": "theirs"}, {"port": 80, "name": "http"},
                               {"port": 443, "name": "https"}]}}
    patch = {"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 8080}],
                      "ports": [{"port": 8080, "name": "alt"}, {"port": 443, "$patch": "delete"}]}}
    assert strategic_merge(live, patch) == {"spec": {"ports": [
        {"port": 80, "name": "http"}, {"port": 8080, "name": "alt"}, {"port": 9090, "name": "theirs"}]}}


def test_rbac_verbs_follow_the_api_server_mapping() -> None:
    rules = [{"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]}]
    ing = "/apis/networking.k8s.io/v1/namespaces/a/ingresses"
    assert rbac_allows(rules, "GET", ing, {}) and rbac_allows(rules, "GET", ing, {"watch": "true"})
    assert not rbac_allows(rules, "GET", f"{ing}/web", {})  # get is not list
    assert rbac_allows(rules, "PUT", f"{ing}/web/status", {}) and not rbac_allows(rules, "PUT", f"{ing}/web", {})
    assert not rbac_allows(rules, "GET", "/api/v1/services", {})  # another group
    assert rbac_allows(rules, "GET", "/apis/networking.k8s.io/v1", {})  # discovery
    assert rbac_allows(rules, "GET", "/version", {})
