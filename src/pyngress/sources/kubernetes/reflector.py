"""List, then watch, one kind into its `Store`, forever: the client-go Reflector contract, in asyncio.

1. List (paged: `limit` + `continue`), replace the cache with the result, and remember the list's
   resourceVersion. The first successful list sets `synced`.
2. Watch from that resourceVersion with `allowWatchBookmarks=true` and a random `timeoutSeconds` in
   [300, 600) (the spread keeps a fleet of replicas from re-watching in step). Every event, bookmarks
   included, advances the resourceVersion.
3. The stream ends cleanly (the server's timeout, a proxy's idle close, `close all watches`): watch again
   from the last resourceVersion. Nothing is missed, nothing is repeated: the server replays what came
   after that version.
4. No line for `inactivity` seconds: the stream is stalled (a dead TCP peer, a half-open proxy); drop it
   and watch again from the last resourceVersion.
5. ERROR 410 Gone (in the stream, or as the HTTP status): our version was compacted away. Relist; the
   `Store.replace` diff turns objects that vanished in the gap into DELETED changes.
6. Any other failure (connection refused, 5xx, 429, a garbled line): wait a jittered exponential backoff,
   at least the server's Retry-After, then retry the step that failed. A watch is never opened without a
   resourceVersion once the cache holds anything: that would replay the whole world as ADDED and lose the
   deletes.

Changes are reported to `on_change` synchronously (no await between applying an event and reporting it),
so whoever rebuilds from the stores sees them in the order they happened.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from pyngress.observability import events as metrics  # issue 8: watch events, relists, errors
from pyngress.sources.kubernetes.backoff import Backoff
from pyngress.sources.kubernetes.client import ApiError, KubeClient
from pyngress.sources.kubernetes.events import (
    BOOKMARK,
    ERROR,
    WatchDecodeError,
    WatchEvent,
    decode_event,
    object_key,
    to_entry,
)
from pyngress.sources.kubernetes.resources import Resource
from pyngress.sources.kubernetes.store import Change, Entry, Store

SHORT_WATCH = 1.0  # seconds: a watch that ends sooner without a single event counts as a failure
MAX_LINE = 64 * 2**20  # one watch event larger than this is a broken stream, not an object we could hold


@dataclass(frozen=True, slots=True)
class WatchSettings:
    page_size: int = 500
    timeout_range: tuple[int, int] = (300, 600)  # watch timeoutSeconds, drawn per watch
    inactivity: float = 90.0  # seconds without a line (bookmarks come about every minute) = stalled
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


class Gone(Exception):
    """410: the resourceVersion we hold is too old; relist."""


@dataclass(slots=True)
class Counters:
    lists: int = 0
    watches: int = 0
    relists_after_gone: int = 0
    stalls: int = 0
    errors: int = 0
    events: int = 0
    delays: list[float] = field(default_factory=list)


class Reflector:
    def __init__(self, client: KubeClient, resource: Resource, namespace: str, store: Store,
                 on_change: Callable[[Sequence[Change]], None], *, settings: WatchSettings | None = None,
                 rng: random.Random | None = None, log: logging.Logger | None = None) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.store = store
        self.on_change = on_change
        self.settings = settings or WatchSettings()
        self.rng = rng or random.Random()
        self.backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap, rng=self.rng)
        self.log = log or logging.getLogger(__name__)
        self.synced = asyncio.Event()
        self.counters = Counters()
        self._gone_streak = 0  # 410s since the last event applied

    async def run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
            except Gone as exc:
                self.counters.relists_after_gone += 1
                self.log.info("%s: resourceVersion %s is gone: relisting", self.resource.kind,
                              self.store.resource_version)
                need_list = True
                self._gone_streak += 1
                if self._gone_streak > 1:  # gone again right after a fresh list: do not spin on it
                    await self._pause(exc)
            except (ApiError, WatchDecodeError, aiohttp.ClientError, TimeoutError) as exc:
                await self._pause(exc)

    async def _pause(self, exc: Exception) -> None:
        self.counters.errors += 1
        metrics.kube_watch_error(self.resource.plural)
        delay = self.backoff.next_delay(exc.retry_after if isinstance(exc, ApiError) else None)
        self.counters.delays.append(delay)
        self.log.warning("%s: %s; retrying in %.1fs", self.resource.kind, exc, delay)
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        """A full (paged) list; on a 410 for an expired continue token the list starts over."""
        listed: dict[str, Entry] = {}
        params = self._selectors({"limit": str(self.settings.page_size)})
        resource_version = ""
        while True:
            try:
                page = await self.client.request("GET", self._path(), params=params)
            except ApiError as exc:
                if exc.status == 410 and "continue" in params:
                    listed.clear()
                    params.pop("continue")
                    continue
                raise
            self.counters.lists += 1
            for raw in page.get("items") or ():
                listed[object_key(raw)] = to_entry(self.resource, raw)
            metadata = page.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion", resource_version))
            token = metadata.get("continue")
            if not token:
                break
            params["continue"] = str(token)
        if not resource_version:  # we could never watch from this list: treat it as a failed one
            raise ApiError(0, f"list of {self.resource.kind} carried no resourceVersion")
        changes = self.store.replace(listed, resource_version)
        metrics.kube_relist(self.resource.plural)
        self.backoff.reset()
        self.synced.set()
        if changes:
            self.on_change(changes)

    async def _watch(self) -> None:
        """One watch, until it ends cleanly or stalls (return) or fails (raise)."""
        assert self.store.resource_version, "never watch without a resourceVersion"
        low, high = self.settings.timeout_range
        params = self._selectors({"resourceVersion": self.store.resource_version, "allowWatchBookmarks": "true",
                                  "timeoutSeconds": str(self.rng.randrange(low, high))})
        try:
            response = await self.client.watch(self._path(), params)
        except ApiError as exc:
            if exc.status == 410:
                raise Gone from exc
            raise
        self.counters.watches += 1
        loop = asyncio.get_running_loop()
        started, events = loop.time(), self.counters.events
        try:
            await self._read(response)
        finally:
            response.release()
        if self.counters.events == events and loop.time() - started < SHORT_WATCH:
            # closed at once, with nothing in it (a proxy in the way, a server shedding load): back off
            # rather than re-watch in a tight loop
            raise ApiError(0, f"watch of {self.resource.kind} ended at once with no event")

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        buffer = b""
        while True:
            try:
                chunk = await asyncio.wait_for(response.content.readany(), self.settings.inactivity)
            except TimeoutError:
                self.counters.stalls += 1
                self.log.warning("%s: no watch event for %.0fs: re-watching from %s", self.resource.kind,
                                 self.settings.inactivity, self.store.resource_version)
                return
            if not chunk:
                return  # a clean end: the caller re-watches from the last resourceVersion
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE:
                raise WatchDecodeError(f"a watch event over {MAX_LINE} bytes")
            events = [decode_event(line) for line in lines if line.strip()]
            if events:
                self._handle(events)

    def _handle(self, events: Sequence[WatchEvent]) -> None:
        changes: list[Change] = []
        try:
            self._apply(events, changes)
        finally:  # what was applied before an ERROR event is reported all the same
            if changes:
                self.on_change(changes)

    def _apply(self, events: Sequence[WatchEvent], changes: list[Change]) -> None:
        for event in events:
            self.counters.events += 1
            metrics.kube_watch_event(self.resource.plural, event.type)
            if event.type == ERROR:
                if event.error_code == 410:
                    raise Gone
                raise ApiError(event.error_code, str(event.object.get("message", "watch error")))
            if event.type == BOOKMARK:
                self.store.bookmark(event.resource_version)
                continue
            self._gone_streak = 0
            change = self.store.apply(event.type, object_key(event.object), to_entry(self.resource, event.object))
            if change is not None:
                changes.append(change)
        self.backoff.reset()

    def _path(self) -> str:
        return self.resource.collection_path(self.namespace)

    def _selectors(self, params: dict[str, str]) -> dict[str, str]:
        if self.resource.field_selector:
            params["fieldSelector"] = self.resource.field_selector
        if self.resource.label_selector:
            params["labelSelector"] = self.resource.label_selector
        return params
