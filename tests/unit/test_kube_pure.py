"""The pure parts of cluster mode: cache diffs, watch decoding, backoff, paths, Lease decisions, status."""

from __future__ import annotations

import datetime
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyngress.model import Meta, Secret, Service
from pyngress.sources.kubernetes import addresses, lease
from pyngress.sources.kubernetes.backoff import Backoff, parse_retry_after
from pyngress.sources.kubernetes.events import WatchDecodeError, decode_event, object_key, to_entry
from pyngress.sources.kubernetes.resources import INGRESS, INGRESS_CLASS, SECRET, SERVICE, configmap_resource
from pyngress.sources.kubernetes.store import ADDED, DELETED, MODIFIED, Entry, Store


def svc(name: str, rv: str, port: int = 80, status: object = None) -> Entry:
    return Entry(rv, Service(Meta(name, "ns"), ports=()), (), status) if port == 80 else Entry(
        rv, Service(Meta(name, "ns"), type="NodePort"), (), status)


# -- store --------------------------------------------------------------------------------------------------


def test_store_reports_added_modified_deleted_and_ignores_replays() -> None:
    store = Store("Service")
    assert store.apply(ADDED, "ns/a", svc("a", "2")).type == ADDED  # type: ignore[union-attr]
    assert store.apply(ADDED, "ns/a", svc("a", "2")) is None  # the same event replayed
    change = store.apply(MODIFIED, "ns/a", svc("a", "3", port=81))
    assert change is not None and change.type == MODIFIED and change.spec_changed
    assert store.apply(DELETED, "ns/a", svc("a", "4", port=81)).type == DELETED  # type: ignore[union-attr]
    assert store.apply(DELETED, "ns/a", svc("a", "5")) is None  # deleting what we do not hold
    assert store.entries == {} and store.resource_version == "5"


def test_status_only_change_is_not_a_spec_change() -> None:
    store = Store("Service")
    store.apply(ADDED, "ns/a", svc("a", "2"))
    change = store.apply(MODIFIED, "ns/a", svc("a", "3", status={"loadBalancer": {}}))
    assert change is not None and not change.spec_changed


def test_relist_emits_the_deletes_of_the_gap() -> None:
    store = Store("Service")
    store.replace({"ns/a": svc("a", "2"), "ns/b": svc("b", "3"), "ns/c": svc("c", "4")}, "4")
    changes = store.replace({"ns/a": svc("a", "2"), "ns/c": svc("c", "9", port=81), "ns/d": svc("d", "8")}, "10")
    assert sorted((c.type, c.key) for c in changes) == [(ADDED, "ns/d"), (DELETED, "ns/b"), (MODIFIED, "ns/c")]
    assert set(store.entries) == {"ns/a", "ns/c", "ns/d"} and store.resource_version == "10"


def test_bookmark_only_moves_the_resource_version() -> None:
    store = Store("Service")
    store.replace({"ns/a": svc("a", "2")}, "2")
    store.bookmark("40")
    assert store.resource_version == "40" and list(store.entries) == ["ns/a"]


# -- events -------------------------------------------------------------------------------------------------


def test_decode_events_and_gone() -> None:
    e = decode_event(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"77"}}}')
    assert (e.type, e.resource_version, e.error_code) == ("BOOKMARK", "77", 0)
    gone = decode_event(b'{"type":"ERROR","object":{"kind":"Status","code":410}}')
    assert gone.error_code == 410
    for bad in (b"not json", b"[]", b'{"type":"ADDED"}', b"\xff"):
        with pytest.raises(WatchDecodeError):
            decode_event(bad)


def test_list_items_without_kind_are_parsed_as_their_resource() -> None:
    raw = {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "12"},
           "spec": {"ports": [{"port": 80}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}
    entry = to_entry(SERVICE, raw)
    assert isinstance(entry.obj, Service) and entry.obj.ports[0].port == 80
    assert entry.resource_version == "12" and entry.status == raw["status"]
    assert object_key(raw) == "shop/web" and object_key({"metadata": {"name": "c"}}) == "/c"


def test_only_secrets_pyngress_can_use_are_decoded_and_kept() -> None:
    def secret(type_: str, **data: str) -> dict[str, object]:
        return {"metadata": {"name": "s", "namespace": "x", "resourceVersion": "3"}, "type": type_, "data": data}

    assert isinstance(to_entry(SECRET, secret("kubernetes.io/tls", **{"tls.crt": "", "tls.key": ""})).obj, Secret)
    assert isinstance(to_entry(SECRET, secret("Opaque", **{"ca.crt": "YQ=="})).obj, Secret)
    assert isinstance(to_entry(SECRET, secret("Opaque", auth="YQ==")).obj, Secret)
    token = to_entry(SECRET, secret("kubernetes.io/service-account-token", token="YQ=="))
    assert token.obj is None and token.resource_version == "3" and token.problems == ()


def test_malformed_object_is_kept_as_problems() -> None:
    entry = to_entry(SERVICE, {"metadata": {"name": "web", "namespace": "x"}, "spec": {"ports": [{"port": 0}]}})
    assert entry.obj is None and entry.problems and entry.problems[0].name == "web"


# -- backoff ------------------------------------------------------------------------------------------------


def test_backoff_grows_jittered_capped_and_resets() -> None:
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    b.reset()
    assert b.next_delay() <= 1.0


def test_retry_after_is_a_floor_with_a_bound() -> None:
    b = Backoff(base=0.1, cap=1.0, max_retry_after=60, rng=random.Random(1))
    assert b.next_delay(retry_after=5) == 5
    assert b.next_delay(retry_after=3600) == 60


def test_parse_retry_after() -> None:
    assert parse_retry_after("3", now=0) == 3.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0) == 6.0
    assert parse_retry_after("soon", now=0) is None and parse_retry_after(None, now=0) is None


# -- resources ----------------------------------------------------------------------------------------------


def test_paths() -> None:
    assert INGRESS.collection_path("shop") == "/apis/networking.k8s.io/v1/namespaces/shop/ingresses"
    assert INGRESS.collection_path() == "/apis/networking.k8s.io/v1/ingresses"
    assert SERVICE.object_path("a", "b") == "/api/v1/namespaces/a/services/b"
    assert INGRESS.object_path("a", "b", "status") == "/apis/networking.k8s.io/v1/namespaces/a/ingresses/b/status"
    assert INGRESS_CLASS.collection_path("shop") == "/apis/networking.k8s.io/v1/ingressclasses"
    assert SECRET.field_selector == "type!=helm.sh/release.v1"


def test_configmap_watch_is_narrowed_to_the_controller_configmap() -> None:
    res, ns = configmap_resource("ingress/pyngress")
    assert (res.field_selector, ns) == ("metadata.name=pyngress", "ingress")
    assert configmap_resource("pyngress")[1] == ""


# -- lease --------------------------------------------------------------------------------------------------

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)


def test_claiming_a_new_lease_and_taking_one_over() -> None:
    body = lease.claimed(None, name="pyngress", namespace="ing", identity="a", duration=15, now=NOW)
    stamp = "2026-01-02T03:04:05.678901Z"
    assert body["spec"] == {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": stamp,
                            "acquireTime": stamp, "leaseTransitions": 0}
    renewed = lease.claimed(body, name="pyngress", namespace="ing", identity="a", duration=15,
                            now=NOW + datetime.timedelta(seconds=2))
    assert renewed["spec"]["acquireTime"] == body["spec"]["acquireTime"]
    assert renewed["spec"]["leaseTransitions"] == 0
    taken = lease.claimed(renewed, name="pyngress", namespace="ing", identity="b", duration=15, now=NOW)
    assert taken["spec"]["holderIdentity"] == "b" and taken["spec"]["leaseTransitions"] == 1
    assert lease.released(taken, NOW)["spec"]["holderIdentity"] == ""


def test_expiry_is_judged_by_our_clock_from_the_last_change() -> None:
    observer = lease.LeaseObserver()
    record = lease.LeaseRecord("a", 10, "t0", "t0", 0)
    observer.observe(record, now=100.0)
    assert observer.held_by_other("b", now=109.0) and not observer.held_by_other("a", now=109.0)
    observer.observe(record, now=105.0)  # unchanged: the clock keeps running from 100
    assert not observer.held_by_other("b", now=110.5)
    observer.observe(lease.LeaseRecord("a", 10, "t0", "t1", 0), now=111.0)  # renewed: held again
    assert observer.held_by_other("b", now=120.0)


# -- status addresses ---------------------------------------------------------------------------------------


def test_status_addresses() -> None:
    assert addresses.static_status(["203.0.113.7", "lb.example.com", "203.0.113.7"]) == [
        {"hostname": "lb.example.com"}, {"ip": "203.0.113.7"}]  # sorted by (ip, hostname): a stable order
    entries = [{"ip": "198.51.100.2", "ports": [{"port": 80}]}, {"ip": "198.51.100.1"}]
    service = {"loadBalancer": {"ingress": entries}}
    assert addresses.service_status(service) == [{"ip": "198.51.100.1"}, {"ip": "198.51.100.2"}]
    desired = addresses.static_status(["198.51.100.2", "198.51.100.1"])
    assert not addresses.needs_write(service, desired)
    assert addresses.needs_write({}, desired) and addresses.needs_write(None, desired)


# -- store, by property ------------------------------------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["put", "delete"]), st.integers(0, 5), st.integers(80, 83)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(seen=OPS, missed=OPS)
def test_events_then_a_relist_leave_the_cache_equal_to_the_cluster(seen: list[tuple[str, int, int]],
                                                                   missed: list[tuple[str, int, int]]) -> None:
    """Apply some writes as watch events, then lose the watch while more happen, then relist: the cache
    equals the cluster, and the relist's changes are exactly what differed (the gap's deletes included)."""
    cluster: dict[str, Entry] = {}
    store = Store("Service")
    rv = 1
    for op, i, port in seen:
        rv += 1
        key, entry = f"ns/s{i}", svc(f"s{i}", str(rv), port=80 if port == 80 else 81)
        if op == "put":
            cluster[key] = entry
            store.apply(ADDED if key not in store.entries else MODIFIED, key, entry)
        elif key in cluster:
            del cluster[key]
            store.apply(DELETED, key, entry)
        assert store.entries == cluster
    before = dict(store.entries)
    for op, i, port in missed:  # the watch is down: the cluster moves on alone
        rv += 1
        key = f"ns/s{i}"
        if op == "put":
            cluster[key] = svc(f"s{i}", str(rv), port=80 if port == 80 else 81)
        else:
            cluster.pop(key, None)
    changes = store.replace(dict(cluster), str(rv))
    assert store.entries == cluster and store.resource_version == str(rv)
    expected = {k for k in before.keys() | cluster.keys() if before.get(k) != cluster.get(k)}
    assert {c.key for c in changes} == expected
    assert all((c.type == DELETED) == (c.key not in cluster) for c in changes)
