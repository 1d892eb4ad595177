"""Leader election: one replica at a time holds the Lease `--election-id` and is the one that writes status.

Every `retry_period` (jittered by up to 20 %) each replica reads the Lease: the holder renews it; a follower
takes it over once it has seen the record unchanged for the lease duration (see `lease`). A leader that
cannot renew for `renew_deadline` steps down before its Lease can expire, so two replicas never both believe
they lead: renew_deadline < lease_duration is the safety margin (client-go defaults: 15 s, 10 s, 2 s).
On a clean stop the leader releases the Lease so a follower takes over within one retry period.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable

from pyngress.sources.kubernetes.client import ApiError, KubeClient
from pyngress.sources.kubernetes.lease import LeaseObserver, claimed, read_record, released
from pyngress.sources.kubernetes.resources import LEASE


class LeaderElector:
    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 release_on_stop: bool = True, log: logging.Logger | None = None) -> None:
        assert renew_deadline < lease_duration, "a leader must give up before its lease can expire"
        self.client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self.rng = rng or random.Random()
        self.release_on_stop = release_on_stop
        self.log = log or logging.getLogger(__name__)
        self.leading = asyncio.Event()
        self.changed = asyncio.Event()  # set whenever leadership is gained or lost
        self._observer = LeaseObserver()
        self._last_renew = 0.0

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self) -> None:
        try:
            while True:
                held = await self._try_hold()
                now = self.clock()
                if held:
                    self._last_renew = now
                    self._set(True)
                elif self.is_leader and now - self._last_renew > self.renew_deadline:
                    self._set(False)
                await asyncio.sleep(self.retry_period * (1 + 0.2 * self.rng.random()))
        finally:
            if self.is_leader:
                self._set(False)
            if self._last_renew and self.release_on_stop:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release())

    def _set(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        (self.leading.set if leading else self.leading.clear)()
        self.changed.set()
        self.log.info("%s %s the lease %s/%s", self.identity, "holds" if leading else "lost", self.namespace,
                      self.name)

    async def _try_hold(self) -> bool:
        path = LEASE.object_path(self.namespace, self.name)
        try:
            lease = await self.client.request("GET", path)
        except ApiError as exc:
            if exc.status != 404:
                self.log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                return False
            return await self._write("POST", LEASE.collection_path(self.namespace), None)
        self._observer.observe(read_record(lease), self.clock())
        if self._observer.held_by_other(self.identity, self.clock()):
            return False
        return await self._write("PUT", path, lease)

    async def _write(self, method: str, path: str, lease: dict[str, object] | None) -> bool:
        body = claimed(lease, name=self.name, namespace=self.namespace, identity=self.identity,
                       duration=max(1, round(self.lease_duration)), now=datetime.datetime.now(datetime.UTC))
        try:
            written = await self.client.request(method, path, body=body)
        except ApiError as exc:  # 409: another candidate wrote first; it leads this round
            if exc.status not in (409, 422):
                self.log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        self._observer.observe(read_record(written), self.clock())
        return True

    async def _release(self) -> None:
        path = LEASE.object_path(self.namespace, self.name)
        lease = await self.client.request("GET", path)
        if read_record(lease).holder == self.identity:
            await self.client.request("PUT", path, body=released(lease, datetime.datetime.now(datetime.UTC)))
