"""A test Kubernetes API server: aiohttp on 127.0.0.1, in-memory, faithful enough for kubectl and our watch loop.

What it does as the real one does (the contract tests in test_kube_contract.py run against both):
- discovery: /version, /api, /api/v1, /apis, /apis/<group>/<version>, for the kinds in `fake_api_data`;
- objects at namespaced and all-namespace paths; POST (server-set uid, creationTimestamp, generation,
  resourceVersion; 409 AlreadyExists), GET, PUT (409 Conflict on a stale resourceVersion; generation bumped
  when the spec changes; status kept), PATCH (merge-patch, and the strategic-merge subset kubectl apply sends
  for these kinds), DELETE, and the `/status` subresource (only status changes through it);
- admission: an Ingress created without a class gets the default IngressClass's name (DefaultIngressClass);
- one global resourceVersion counter and a history of events, with `compact()` to drop it;
- list with label and field selectors and paged with `limit`/`continue` (pages come from one consistent copy);
- watch from a resourceVersion: replays history after it, or answers an ERROR 410 event when it was compacted;
  `0`/absent starts with synthetic ADDED events; selectors apply to events; BOOKMARKs every
  `bookmark_interval` seconds when asked; the stream ends after timeoutSeconds.
Fault hooks: `close_watches()` (clean end), `abort_connections()` (RST), `stall_watches()` (open but
silent), `fail_next(n, status, retry_after)` (429/500 answers), and `requests`, the log of every request.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import ssl
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from fake_api_data import (
    BY_PATH,
    DEFAULT_CLASS,
    KINDS,
    Kind,
    Obj,
    group_list,
    merge_patch,
    rbac_allows,
    resource_list,
    selected,
    strategic_merge,
)

RBAC_SUBJECT_TOKEN = "controller-token"


@dataclass
class Event:
    rv: int
    type: str
    kind: Kind
    obj: Obj
    old: Obj | None = None


@dataclass
class Watcher:
    kind: Kind
    namespace: str
    labels: str
    fields: str
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    request: web.Request | None = None
    stalled: bool = False


@dataclass
class Fault:
    remaining: int
    status: int
    retry_after: str | None
    match: Callable[[web.Request], bool]


class FakeApiServer:
    def __init__(self, *, bookmark_interval: float | None = None, history: int = 10000,
                 ssl_context: ssl.SSLContext | None = None, token: str | None = None) -> None:
        self.bookmark_interval = bookmark_interval
        self.ssl_context = ssl_context  # serve HTTPS (as a real API server does)
        self.token = token  # when set, requests must carry "Authorization: Bearer <token>" (else 401)
        self.objects: dict[tuple[Kind, str, str], Obj] = {}
        self.rv = 1
        self.history: deque[Event] = deque(maxlen=history)
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.watchers: list[Watcher] = []
        self.faults: list[Fault] = []
        # ClusterRole-style rules ({apiGroups, resources, verbs}) bound to the subject whose token is
        # RBAC_SUBJECT_TOKEN (see `kubeconfig(subject=True)`): anything else it asks is 403. Discovery is
        # always allowed, as system:discovery grants it. Other tokens are the cluster admin.
        self.rbac: list[Obj] = []
        self.denied: list[tuple[str, str, dict[str, str]]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.pages: dict[str, list[Obj]] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> FakeApiServer:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self.close_watches()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while self.watchers and loop.time() < deadline:  # let every watch handler return on its own
            await asyncio.sleep(0.005)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def kubeconfig(self, path: str, *, subject: bool = False) -> str:
        """A kubeconfig for this server: the admin's, or (`subject`) the one `rbac` applies to."""
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                  "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                  "users": [{"name": "fake", "user": {"token": RBAC_SUBJECT_TOKEN if subject else "fake-token"}}],
                  "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    # -- fault hooks -------------------------------------------------------------------------------------

    def close_watches(self) -> None:
        for w in self.watchers:
            w.queue.put_nowait(None)

    def abort_connections(self) -> None:
        for w in list(self.watchers):
            if w.request is not None and w.request.transport is not None:
                w.request.transport.abort()

    def stall_watches(self) -> None:
        for w in self.watchers:
            w.stalled = True

    def fail_next(self, count: int, status: int, retry_after: str | None = None,
                  match: Callable[[web.Request], bool] = lambda r: True) -> None:
        self.faults.append(Fault(count, status, retry_after, match))

    def compact(self) -> None:
        self.history.clear()
        self.compacted = self.rv

    def count(self, path_part: str, *, watch: bool | None = None) -> int:
        return sum(1 for _, p, q in self.requests
                   if path_part in p and (watch is None or (q.get("watch") == "true") == watch))

    # -- storage -----------------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, type_: str, kind: Kind, obj: Obj, old: Obj | None = None) -> None:
        event = Event(self.rv, type_, kind, copy.deepcopy(obj), old)
        self.history.append(event)
        for w in self.watchers:
            if w.kind == kind and not w.stalled:
                w.queue.put_nowait(event)

    def put_object(self, obj: Obj) -> Obj:
        """Create or replace an object directly (test setup), as a write through the API would."""
        kind = next(k for k in KINDS if k.kind == obj["kind"] and k.api_version == obj["apiVersion"])
        meta = obj.setdefault("metadata", {})
        ns = meta.setdefault("namespace", "default") if kind.namespaced else ""
        key = (kind, ns, meta["name"])
        old = self.objects.get(key)
        self._server_fields(kind, obj, old)
        self.objects[key] = obj
        self._record("MODIFIED" if old else "ADDED", kind, obj, old)
        return obj

    def delete_object(self, kind_name: str, namespace: str, name: str) -> None:
        kind = next(k for k in KINDS if k.kind == kind_name)
        obj = self.objects.pop((kind, namespace if kind.namespaced else "", name))
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", kind, obj)

    def _server_fields(self, kind: Kind, obj: Obj, old: Obj | None) -> None:
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        meta = obj["metadata"]
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["generation"] = 1
        else:
            for k in ("uid", "creationTimestamp"):
                meta[k] = old["metadata"][k]
            changed = {k: v for k, v in obj.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")}
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if changed else 0)
        meta["resourceVersion"] = self._next_rv()

    # -- HTTP --------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        as_subject = request.headers.get("Authorization") == f"Bearer {RBAC_SUBJECT_TOKEN}"
        if as_subject and not rbac_allows(self.rbac or [], request.method, request.path, request.query):
            self.denied.append((request.method, request.path, dict(request.query)))
            return _status(403, "Forbidden", f"{request.method} {request.path} is not allowed by the role")
        for fault in self.faults:
            if fault.remaining > 0 and fault.match(request):
                fault.remaining -= 1
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return _status(fault.status, "TooManyRequests" if fault.status == 429 else "InternalError",
                               "injected fault", headers=headers)
        response: web.StreamResponse = await handler(request)
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response({"major": "1", "minor": "32", "gitVersion": "v1.32.0-pyngress-fake",
                                      "platform": "linux/amd64"})
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]})
        if parts == ["apis"]:
            return web.json_response(group_list())
        if parts[:2] == ["api", "v1"]:
            return await self._resource(request, "", "v1", parts[2:])
        if parts[:1] == ["apis"] and len(parts) >= 3:
            return await self._resource(request, parts[1], parts[2], parts[3:])
        if parts[:1] == ["apis"] and len(parts) == 2:
            return web.json_response(group_list(parts[1]))
        return _status(404, "NotFound", f"the server could not find the requested resource {request.path}")

    async def _resource(self, request: web.Request, group: str, version: str,
                        rest: list[str]) -> web.StreamResponse:
        if not rest:
            return web.json_response(resource_list(group, version))
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        kind = BY_PATH.get((group, version, rest[0]))
        if kind is None:
            return _status(404, "NotFound", f"the server could not find the requested resource {request.path}")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and (sub != "status" or not kind.status):
            return _status(404, "NotFound", f"no subresource {sub}")
        method = request.method
        if not name:
            if method == "GET":
                return await (self._watch if request.query.get("watch") in ("true", "1") else self._list)(
                    request, kind, namespace)
            if method == "POST":
                return await self._create(request, kind, namespace)
            return _status(405, "MethodNotAllowed", "method not allowed")
        key = (kind, namespace if kind.namespaced else "", name)
        handlers = {"GET": self._get, "PUT": self._put, "PATCH": self._patch, "DELETE": self._delete}
        if method not in handlers:
            return _status(405, "MethodNotAllowed", "method not allowed")
        return await handlers[method](request, kind, key, sub)

    async def _list(self, request: web.Request, kind: Kind, namespace: str) -> web.Response:
        query = request.query
        token = query.get("continue")
        if token:
            if token not in self.pages:
                return _status(410, "Expired", "the provided continue parameter is too old")
            items, rv = self.pages.pop(token), json.loads(base64.b64decode(token))["rv"]
        else:
            items = [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items(), key=lambda e: e[0][1:])
                     if k == kind and (not namespace or ns == namespace)
                     and selected(o, query.get("labelSelector", ""), query.get("fieldSelector", ""))]
            rv = self.rv
        limit = int(query.get("limit", "0") or 0)
        metadata: Obj = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            items, remaining = items[:limit], items[limit:]
            next_token = base64.b64encode(json.dumps({"rv": rv, "id": uuid.uuid4().hex}).encode()).decode()
            self.pages[next_token] = remaining
            metadata["continue"] = next_token
        for item in items:  # as the real server: list items carry no kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return web.json_response({"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                                  "metadata": metadata, "items": items})

    async def _watch(self, request: web.Request, kind: Kind, namespace: str) -> web.StreamResponse:
        query = request.query
        watcher = Watcher(kind, namespace, query.get("labelSelector", ""), query.get("fieldSelector", ""),
                          request=request)
        since = query.get("resourceVersion", "")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since not in ("", "0") and int(since) < self.compacted:
            await _send(response, {"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                "message": f"too old resource version: {since} ({self.compacted})"}})
            return response
        if since in ("", "0"):
            for (k, ns, _), obj in sorted(self.objects.items(), key=lambda e: e[0][1:]):
                if k == kind and (not namespace or ns == namespace):
                    watcher.queue.put_nowait(Event(self.rv, "ADDED", kind, copy.deepcopy(obj)))
        else:
            for event in self.history:
                if event.kind == kind and event.rv > int(since):
                    watcher.queue.put_nowait(event)
        self.watchers.append(watcher)
        try:
            await self._stream(response, watcher, query)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(watcher)
        return response

    async def _stream(self, response: web.StreamResponse, watcher: Watcher, query: Any) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + int(query.get("timeoutSeconds", "1800"))
        bookmarks = query.get("allowWatchBookmarks") == "true" and self.bookmark_interval is not None
        while (left := end - loop.time()) > 0:
            wait = min(left, self.bookmark_interval) if bookmarks and self.bookmark_interval else left
            try:
                async with asyncio.timeout(wait):  # no inner task, unlike wait_for: nothing to leak
                    event = await watcher.queue.get()
            except TimeoutError:
                if bookmarks and not watcher.stalled:
                    await _send(response, {"type": "BOOKMARK", "object": {
                        "kind": watcher.kind.kind, "apiVersion": watcher.kind.api_version,
                        "metadata": {"resourceVersion": str(self.rv)}}})
                continue
            if event is None:
                return
            if watcher.stalled:
                continue
            line = self._event_for(watcher, event)
            if line is not None:
                await _send(response, line)

    def _event_for(self, watcher: Watcher, event: Event) -> Obj | None:
        if watcher.namespace and event.obj["metadata"].get("namespace") != watcher.namespace:
            return None
        now = selected(event.obj, watcher.labels, watcher.fields)
        before = event.old is not None and selected(event.old, watcher.labels, watcher.fields)
        if now:
            return {"type": "ADDED" if event.type == "MODIFIED" and not before and event.old else event.type,
                    "object": event.obj}
        if before and event.type == "MODIFIED":  # moved out of the selection: a delete for this watcher
            return {"type": "DELETED", "object": event.obj}
        return None

    async def _create(self, request: web.Request, kind: Kind, namespace: str) -> web.Response:
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        key = (kind, meta.get("namespace", "") if kind.namespaced else "", meta.get("name", ""))
        if not key[2]:
            return _status(422, "Invalid", "metadata.name: Required value")
        if key in self.objects:
            return _status(409, "AlreadyExists", f'{kind.plural} "{key[2]}" already exists', name=key[2],
                           kind=kind)
        if kind.kind == "Ingress":
            self._default_class(obj)
        if request.query.get("dryRun") == "All":
            return web.json_response(obj, status=201)
        obj.pop("status", None) if kind.kind == "Ingress" else None
        self._server_fields(kind, obj, None)
        self.objects[key] = obj
        self._record("ADDED", kind, obj)
        return web.json_response(obj, status=201)

    def _default_class(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if spec.get("ingressClassName"):
            return
        for (k, _, name), o in self.objects.items():
            if k.kind == "IngressClass" and o["metadata"].get("annotations", {}).get(DEFAULT_CLASS) == "true":
                spec["ingressClassName"] = name
                return

    async def _get(self, request: web.Request, kind: Kind, key: Any, sub: str) -> web.Response:
        obj = self.objects.get(key)
        if obj is None:
            return _status(404, "NotFound", f'{kind.plural} "{key[2]}" not found', name=key[2], kind=kind)
        return web.json_response(obj)

    async def _put(self, request: web.Request, kind: Kind, key: Any, sub: str) -> web.Response:
        return self._update(kind, key, sub, await request.json(), check_rv=True)

    def _update(self, kind: Kind, key: Any, sub: str, body: Obj, *, check_rv: bool) -> web.Response:
        old = self.objects.get(key)
        if old is None:
            return _status(404, "NotFound", f'{kind.plural} "{key[2]}" not found', name=key[2], kind=kind)
        given = str(body.get("metadata", {}).get("resourceVersion", ""))
        if check_rv and given and given != old["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "{key[2]}": the '
                           "object has been modified; please apply your changes to the latest version and "
                           "try again", name=key[2], kind=kind)
        if sub == "status":
            new = copy.deepcopy(old)
            new["status"] = body.get("status", {})
        else:
            new = body
            new.setdefault("metadata", {})
            new["metadata"]["name"], new["metadata"]["namespace"] = key[2], key[1] or None
            if not kind.namespaced:
                new["metadata"].pop("namespace")
            if kind.status and "status" in old:
                new["status"] = old["status"]
        if _same(new, old):
            return web.json_response(old)  # a no-op write does not bump resourceVersion (as the real one)
        self._server_fields(kind, new, old)
        self.objects[key] = new
        self._record("MODIFIED", kind, new, old)
        return web.json_response(new)

    async def _patch(self, request: web.Request, kind: Kind, key: Any, sub: str) -> web.Response:
        old = self.objects.get(key)
        if old is None:
            return _status(404, "NotFound", f'{kind.plural} "{key[2]}" not found', name=key[2], kind=kind)
        ctype = request.content_type
        patch = await request.json()
        if ctype == "application/merge-patch+json":
            merged = merge_patch(copy.deepcopy(old), patch)
        elif ctype == "application/strategic-merge-patch+json":
            merged = strategic_merge(copy.deepcopy(old), patch)
        else:
            return _status(415, "UnsupportedMediaType", f"the fake does not do {ctype}")
        return self._update(kind, key, sub, merged, check_rv=True)

    async def _delete(self, request: web.Request, kind: Kind, key: Any, sub: str) -> web.Response:
        obj = self.objects.pop(key, None)
        if obj is None:
            return _status(404, "NotFound", f'{kind.plural} "{key[2]}" not found', name=key[2], kind=kind)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", kind, obj)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "details": {"name": key[2], "kind": kind.plural, "uid": obj["metadata"]["uid"]}})


# -- helpers ---------------------------------------------------------------------------------------------


async def _send(response: web.StreamResponse, event: Obj) -> None:
    await response.write(json.dumps(event).encode() + b"\n")


def _status(code: int, reason: str, message: str, *, name: str = "", kind: Kind | None = None,
            headers: dict[str, str] | None = None) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if name:
        body["details"] = {"name": name, "group": kind.group if kind else "", "kind": kind.plural if kind else ""}
    return web.json_response(body, status=code, headers=headers)


def _same(a: Obj, b: Obj) -> bool:
    strip = ("resourceVersion", "generation", "uid", "creationTimestamp")
    am = {k: v for k, v in a.get("metadata", {}).items() if k not in strip and v is not None}
    bm = {k: v for k, v in b.get("metadata", {}).items() if k not in strip and v is not None}
    rest = ("kind", "apiVersion", "metadata")
    body_a = {k: v for k, v in a.items() if k not in rest}
    return am == bm and body_a == {k: v for k, v in b.items() if k not in rest}
