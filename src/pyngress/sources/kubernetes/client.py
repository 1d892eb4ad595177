"""A small API server client: one aiohttp session, auth from kubernetes_asyncio's config loaders.

kubernetes_asyncio knows every way a cluster hands out credentials (in-cluster service account with token
rotation, kubeconfig contexts with client certificates, bearer tokens, exec plugins such as
`aws eks get-token`), so we take the resolved `Configuration` from it. The requests themselves are ours,
over aiohttp: the watch loop needs the status code, the Retry-After header and the raw line stream, which
the generated API classes hide behind retries and models we would have to undo.

Where the credentials come from, in order: `--kubeconfig PATH`; else in-cluster (the service account files
under /var/run/secrets/kubernetes.io/serviceaccount and KUBERNETES_SERVICE_HOST); else `$KUBECONFIG`, else
~/.kube/config, as kubectl does.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from pyngress.sources.kubernetes.backoff import parse_retry_after

TokenSource = Callable[[], Awaitable[str | None]]
REQUEST_TIMEOUT = 30.0
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"  # token, ca.crt, namespace


class ApiError(Exception):
    """The API server answered with an error status (or the request never got an answer: status 0)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in (0, 408, 429) or self.status >= 500


class KubeClient:
    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext | None = None,
                 token: TokenSource | None = None, server_hostname: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._server_hostname = server_hostname
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else False, limit=32)
        self._session = aiohttp.ClientSession(connector=connector, read_bufsize=2**20)

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        """One request; the decoded JSON answer, or ApiError for any status >= 300 or transport failure."""
        data = None if body is None else json.dumps(body).encode()
        headers = await self._headers({"Content-Type": content_type} if data is not None else {})
        try:
            async with self._session.request(method, self.base_url + path, params=params, data=data,
                                             headers=headers, server_hostname=self._server_hostname,
                                             timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise _error(resp, raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"{method} {path}: {exc!r}") from exc
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(0, f"{method} {path}: the answer is not JSON") from None
        if not isinstance(decoded, dict):
            raise ApiError(0, f"{method} {path}: the answer is not a JSON object")
        return decoded

    async def watch(self, path: str, params: Mapping[str, str]) -> aiohttp.ClientResponse:
        """Open a watch stream; the caller reads lines from `.content` and must `release()` it."""
        headers = await self._headers({})
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT)
        try:
            resp = await self._session.get(self.base_url + path, params={**params, "watch": "true"},
                                           headers=headers, timeout=timeout,
                                           server_hostname=self._server_hostname)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"watch {path}: {exc!r}") from exc
        if resp.status >= 300:
            try:
                raw = await resp.read()
            except aiohttp.ClientError:
                raw = b""
            finally:
                resp.release()
            raise _error(resp, raw)
        return resp

    async def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "pyngress", **extra}
        token = await self._token() if self._token is not None else None
        if token:
            headers["Authorization"] = token if token.startswith(("Bearer ", "Basic ")) else f"Bearer {token}"
        return headers


def _error(resp: aiohttp.ClientResponse, raw: bytes) -> ApiError:
    try:
        message = str(json.loads(raw).get("message", "")) or resp.reason or ""
    except (ValueError, AttributeError):
        message = raw[:200].decode("utf-8", "replace") or resp.reason or ""
    return ApiError(resp.status, message, parse_retry_after(resp.headers.get("Retry-After"), time.time()))


async def connect(kubeconfig: str | None = None, context: str | None = None, *,
                  service_account: str = SERVICE_ACCOUNT, environ: Mapping[str, str] = os.environ) -> KubeClient:
    """A client with the credentials found as the module docstring says (`service_account` and `environ`:
    where the in-cluster ones are, for tests)."""
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import load_incluster_config, load_kube_config

    config = Configuration()
    token_file = os.path.join(service_account, "token")
    if kubeconfig is None and environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(token_file):
        load_incluster_config(client_configuration=config, token_filename=token_file,  # type: ignore[no-untyped-call]
                              cert_filename=os.path.join(service_account, "ca.crt"), environ=environ)
    else:
        await load_kube_config(config_file=kubeconfig or _default_kubeconfig(environ), context=context,
                               client_configuration=config, persist_config=False)
    return KubeClient(str(config.host), ssl_context=_ssl_context(config), token=_token_source(config),
                      server_hostname=config.tls_server_name or None)


def _default_kubeconfig(environ: Mapping[str, str]) -> str:
    first = environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return first or os.path.expanduser("~/.kube/config")


def _ssl_context(config: Any) -> ssl.SSLContext | None:
    if not str(config.host).startswith("https"):
        return None
    context = ssl.create_default_context(cafile=config.ssl_ca_cert)
    if config.cert_file:
        context.load_cert_chain(config.cert_file, keyfile=config.key_file)
    if not config.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _token_source(config: Any) -> TokenSource:
    async def token() -> str | None:
        # re-read on every request: in-cluster tokens rotate (the refresh hook re-reads the file) and exec
        # plugins hand out short-lived ones
        value = await config.get_api_key_with_prefix("BearerToken")
        return str(value) if value else None

    return token
