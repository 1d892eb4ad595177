"""Pure parts of issue 6's follow-ups: which ConfigMap watches cluster mode runs, and how a LoadBalancer
status is compared (what makes a Service status write necessary)."""

from __future__ import annotations

from pyngress.sources.kubernetes.resources import configmap_watches
from pyngress.sources.kubernetes.service_status import canonical


def test_one_watch_per_distinct_configmap_named_by_a_field_selector() -> None:
    watches = configmap_watches(("pyngress", "ingress/tcp-services", "ingress/udp-services"), "")
    assert [(slot, r.field_selector, ns) for slot, r, ns in watches] == [
        ("ConfigMap", "metadata.name=pyngress", ""),
        ("ConfigMap ingress/tcp-services", "metadata.name=tcp-services", "ingress"),
        ("ConfigMap ingress/udp-services", "metadata.name=udp-services", "ingress"),
    ]


def test_the_same_configmap_named_twice_is_watched_once_and_names_without_namespace_use_the_watched_one() -> None:
    watches = configmap_watches(("ingress/pyngress", "ingress/pyngress", "tcp"), "shop")
    assert [(slot, r.field_selector, ns) for slot, r, ns in watches] == [
        ("ConfigMap", "metadata.name=pyngress", "ingress"),
        ("ConfigMap tcp", "metadata.name=tcp", "shop"),
    ]


def test_load_balancer_status_compares_as_sets_without_server_fields() -> None:
    ours = {"ingress": [{"ip": "203.0.113.5", "ports": [{"port": 53, "protocol": "UDP"},
                                                       {"port": 53, "protocol": "TCP"}]},
                        {"hostname": "lb.example.com"}]}
    theirs = {"ingress": [{"hostname": "lb.example.com"},
                          {"ip": "203.0.113.5", "ipMode": "VIP",
                           "ports": [{"port": 53, "protocol": "TCP", "error": None},
                                     {"port": 53, "protocol": "UDP"}]}]}
    assert canonical(ours) == canonical(theirs)
    assert canonical({}) == canonical(None) == canonical({"ingress": []}) == ()
    assert canonical(ours) != canonical({"ingress": [{"ip": "203.0.113.5", "ports": [{"port": 53}]}]})
