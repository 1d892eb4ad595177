"""Credentials: in-cluster service account (HTTPS with the cluster CA, bearer token, token file re-read) and
a kubeconfig with a token, both against the test API server requiring that token."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from fake_apiserver import FakeApiServer

from pyngress.sources.kubernetes import ApiError, connect
from pyngress.sources.kubernetes.resources import SERVICE


async def test_in_cluster_service_account_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    api = await FakeApiServer(ssl_context=server_context, token="sa-token").start()
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token")
    ca.cert_pem.write_to_path(str(account / "ca.crt"))
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    client = await connect(service_account=str(account), environ=environ)
    try:
        assert client.base_url == f"https://127.0.0.1:{api.port}"
        listed = await client.request("GET", SERVICE.collection_path())
        assert listed["kind"] == "ServiceList"
    finally:
        await client.close()
        await api.close()


async def test_kubeconfig_token_is_sent_and_a_wrong_one_refused(tmp_path: Path) -> None:
    api = await FakeApiServer(token="fake-token").start()  # the token FakeApiServer.kubeconfig writes
    try:
        client = await connect(api.kubeconfig(str(tmp_path / "kubeconfig")))
        try:
            assert (await client.request("GET", SERVICE.collection_path()))["kind"] == "ServiceList"
        finally:
            await client.close()
        api.token = "another"
        client = await connect(str(tmp_path / "kubeconfig"))
        try:
            with pytest.raises(ApiError) as refused:
                await client.request("GET", SERVICE.collection_path())
            assert refused.value.status == 401 and not refused.value.retryable
        finally:
            await client.close()
    finally:
        await api.close()


async def test_kubeconfig_from_the_environment(tmp_path: Path) -> None:
    api = await FakeApiServer(token="fake-token").start()
    try:
        path = api.kubeconfig(str(tmp_path / "kubeconfig"))
        client = await connect(environ={"KUBECONFIG": f"{path}:/nonexistent"}, service_account=str(tmp_path))
        try:
            assert client.base_url == api.url
            assert (await client.request("GET", SERVICE.collection_path()))["kind"] == "ServiceList"
        finally:
            await client.close()
    finally:
        await api.close()
