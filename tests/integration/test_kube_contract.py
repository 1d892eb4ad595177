"""The API server behaviour our watch loop and status writer rely on, checked against the test API server and,
when PYNGRESS_E2E_KUBECONFIG names a kubeconfig, against that real cluster too (in a throwaway namespace).
If the fake and a real cluster ever disagree, these tests say where, and the fake gets fixed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from fake_apiserver import FakeApiServer
from kube_support import ingress, ingress_class, service

from pyngress.sources.kubernetes import ApiError, KubeClient, connect
from pyngress.sources.kubernetes.resources import INGRESS, INGRESS_CLASS, SERVICE

E2E = os.environ.get("PYNGRESS_E2E_KUBECONFIG", "")
TARGETS = ["fake", pytest.param("cluster", marks=pytest.mark.skipif(
    not E2E, reason="set PYNGRESS_E2E_KUBECONFIG to run the contract against a real cluster"))]


@dataclass
class Api:
    client: KubeClient
    namespace: str
    fake: FakeApiServer | None

    def svc(self, name: str, **labels: str) -> dict[str, Any]:
        body = service(name, namespace=self.namespace)
        body["metadata"]["labels"] = labels
        return body

    async def create(self, body: dict[str, Any], resource: Any = SERVICE) -> dict[str, Any]:
        return await self.client.request("POST", resource.collection_path(self.namespace), body=body)

    async def too_old(self) -> str:
        """A resourceVersion the server no longer has history for."""
        if self.fake is not None:
            self.fake.compact()
        return "1"


@contextlib.asynccontextmanager
async def target(kind: str, tmp: str) -> AsyncIterator[Api]:
    if kind == "fake":
        fake = await FakeApiServer().start()
        client = await connect(fake.kubeconfig(f"{tmp}/kubeconfig"))
        try:
            yield Api(client, "default", fake)
        finally:
            await client.close()
            await fake.close()
        return
    client = await connect(E2E)
    namespace = f"pyngress-contract-{uuid.uuid4().hex[:8]}"
    await client.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": namespace}})
    try:
        yield Api(client, namespace, None)
    finally:
        with contextlib.suppress(ApiError):
            await client.request("DELETE", f"/api/v1/namespaces/{namespace}")
        await client.close()


async def _events(client: KubeClient, path: str, params: dict[str, str], count: int) -> list[dict[str, Any]]:
    response = await client.watch(path, params)
    events: list[dict[str, Any]] = []
    try:
        while len(events) < count:
            line = await asyncio.wait_for(response.content.readline(), 5)
            if not line:
                break
            event = json.loads(line)
            if event["type"] != "BOOKMARK":
                events.append(event)
    finally:
        response.release()
    return events


@pytest.fixture(params=TARGETS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_create_sets_server_fields_and_put_conflicts_on_stale_version(kind: str, tmp_path: Any) -> None:
    async with target(kind, str(tmp_path)) as api:
        created = await api.create(api.svc("web"))
        meta = created["metadata"]
        assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
        assert (created["kind"], created["apiVersion"]) == ("Service", "v1")
        path = SERVICE.object_path(api.namespace, "web")
        fresh = await api.client.request("GET", path)
        fresh["metadata"]["labels"] = {"app": "web"}
        updated = await api.client.request("PUT", path, body=fresh)
        assert updated["metadata"]["resourceVersion"] != meta["resourceVersion"]
        with pytest.raises(ApiError) as stale:
            await api.client.request("PUT", path, body=fresh)  # still carries the old resourceVersion
        assert stale.value.status == 409
        with pytest.raises(ApiError) as exists:
            await api.create(api.svc("web"))
        assert exists.value.status == 409
        ing = await api.create(ingress("web", "a.example.com", "web", namespace=api.namespace), INGRESS)
        assert ing["metadata"]["generation"] == 1
        ing["spec"]["rules"][0]["host"] = "b.example.com"
        ing = await api.client.request("PUT", INGRESS.object_path(api.namespace, "web"), body=ing)
        assert ing["metadata"]["generation"] == 2


async def test_status_subresource_changes_only_status(kind: str, tmp_path: Any) -> None:
    async with target(kind, str(tmp_path)) as api:
        ing = await api.create(ingress("web", "a.example.com", "web", namespace=api.namespace), INGRESS)
        ing["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}
        ing["spec"]["rules"][0]["host"] = "ignored.example.com"
        written = await api.client.request("PUT", INGRESS.object_path(api.namespace, "web", "status"), body=ing)
        assert written["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.1"}]
        assert written["spec"]["rules"][0]["host"] == "a.example.com"
        written["status"] = {}
        main = await api.client.request("PUT", INGRESS.object_path(api.namespace, "web"), body=written)
        assert main["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.1"}]  # main PUT keeps status


async def test_list_selectors_and_pages(kind: str, tmp_path: Any) -> None:
    async with target(kind, str(tmp_path)) as api:
        for i in range(5):
            await api.create(api.svc(f"s{i}", tier="a" if i % 2 else "b"))
        path = SERVICE.collection_path(api.namespace)
        labelled = await api.client.request("GET", path, params={"labelSelector": "tier=a"})
        assert labelled["kind"] == "ServiceList" and len(labelled["items"]) == 2
        named = await api.client.request("GET", path, params={"fieldSelector": "metadata.name=s3"})
        assert [i["metadata"]["name"] for i in named["items"]] == ["s3"]
        names, params = [], {"limit": "2"}
        while True:
            page = await api.client.request("GET", path, params=params)
            assert len(page["items"]) <= 2
            names += [i["metadata"]["name"] for i in page["items"]]
            if not page["metadata"].get("continue"):
                break
            params["continue"] = page["metadata"]["continue"]
        assert sorted(n for n in names if n.startswith("s")) == [f"s{i}" for i in range(5)]


async def test_watch_replays_from_a_version_with_selectors(kind: str, tmp_path: Any) -> None:
    async with target(kind, str(tmp_path)) as api:
        path = SERVICE.collection_path(api.namespace)
        start = (await api.client.request("GET", path))["metadata"]["resourceVersion"]
        await api.create(api.svc("one", tier="a"))
        await api.create(api.svc("two", tier="b"))
        await api.client.request("DELETE", SERVICE.object_path(api.namespace, "one"))
        events = await _events(api.client, path, {"resourceVersion": start, "labelSelector": "tier=a",
                                                  "allowWatchBookmarks": "true", "timeoutSeconds": "5"}, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "one"),
                                                                                 ("DELETED", "one")]
        assert events[0]["object"]["kind"] == "Service"


async def test_watch_from_a_compacted_version_is_gone(kind: str, tmp_path: Any) -> None:
    async with target(kind, str(tmp_path)) as api:
        await api.create(api.svc("web"))
        old = await api.too_old()
        try:
            events = await _events(api.client, SERVICE.collection_path(api.namespace),
                                   {"resourceVersion": old, "timeoutSeconds": "5"}, 1)
        except ApiError as exc:  # some servers answer the HTTP status instead of an ERROR event
            assert exc.status == 410
            return
        if api.fake is None and events and events[0]["type"] != "ERROR":
            pytest.skip("this cluster still serves history from resourceVersion 1 (too young to have compacted)")
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_merge_patch_and_default_ingress_class(kind: str, tmp_path: Any) -> None:
    if kind == "cluster":
        pytest.skip("creates a cluster-wide default IngressClass: only against the fake")
    async with target(kind, str(tmp_path)) as api:
        await api.create(api.svc("web"))
        patched = await api.client.request("PATCH", SERVICE.object_path(api.namespace, "web"),
                                           body={"metadata": {"labels": {"x": "1"}}},
                                           content_type="application/merge-patch+json")
        assert patched["metadata"]["labels"] == {"x": "1"}
        await api.client.request("POST", INGRESS_CLASS.collection_path(), body=ingress_class(default=True))
        created = await api.create(ingress("plain", "a.example.com", "web", cls=None, namespace=api.namespace),
                                   INGRESS)
        assert created["spec"]["ingressClassName"] == "pyngress"
