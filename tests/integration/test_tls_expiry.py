"""A certificate that expires while served: logged once, still served (as nginx serves what it loaded)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from harness import EchoBackend, async_test
from tls_harness import CA, app, compile_docs, der, secret, tls_proxy

from pyngress.runtime.https_listener import EXPIRY_CHECK_EVERY


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@async_test
async def test_a_certificate_expiring_while_served_is_logged_once_and_kept() -> None:
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    leaf = CA.issue_cert("a.example.com", not_after=expires)
    backend = await EchoBackend.start("a")
    records = Records()
    logging.getLogger("pyngress").addHandler(records)
    try:
        docs = [secret("short", leaf),
                *app("a", ["a.example.com"], backend.port, tls=[(["a.example.com"], "short")])]
        async with tls_proxy(compile_docs(docs)) as proxy:
            listener = proxy.server.https
            assert listener is not None
            deadline = time.time() + 10
            while time.time() <= expires.timestamp() + 0.05 and time.time() < deadline:  # wall clock must pass it
                await asyncio.sleep(0.05)
            settings = proxy.server.dataplane.serving.settings
            later = proxy.server.loop.time() + EXPIRY_CHECK_EVERY + 1  # as the ticker would, a minute on
            listener.on_tick(later, settings)
            listener.on_tick(later + 2 * EXPIRY_CHECK_EVERY, settings)
            expired = [m for m in records.messages if "default/short" in m and "expired" in m]
            assert len(expired) == 1 and "still served (a.example.com)" in expired[0]
            async with await proxy.tls("a.example.com") as client:  # nginx keeps what it loaded: so do we
                assert client.peer_der == der(leaf)
                assert (await client.request("GET", "/", host="a.example.com")).status == 200
    finally:
        logging.getLogger("pyngress").removeHandler(records)
        await backend.close()
