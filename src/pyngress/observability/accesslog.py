"""The access log: one line per request to stdout, buffered on the loop and written by a thread.

A line is formatted on the event loop (`logformat`) and appended to a list: no syscall per request. The list
is handed over as one buffer when the server's ticker runs (at most a second later) or when it holds
`FLUSH_BYTES`. A single writer thread writes the buffers to the file descriptor, so a slow reader of stdout
(a log shipper that stalls, a full pipe) never blocks the loop. What waits for the thread is bounded by
`MAX_PENDING_BYTES`: past that, buffers are dropped and counted (`dropped_lines`, exported as
pyngress_access_log_dropped_lines_total): losing log lines beats stalling traffic or growing without bound.
"""

from __future__ import annotations

import os
import queue
import threading
import time

from pyngress.model import ProxySettings
from pyngress.observability.logformat import JsonLines, LineFormat, compile_template
from pyngress.runtime.exchange import Exchange

FLUSH_BYTES = 64 * 1024
MAX_PENDING_BYTES = 16 * 1024 * 1024
PIPE_BUF = 4096  # POSIX minimum (Linux's value): writes up to this size to a pipe are atomic


class AccessLog:
    def __init__(self, fd: int = 1, *, max_pending: int = MAX_PENDING_BYTES) -> None:
        self.fd = fd
        self.max_pending = max_pending
        self.format: LineFormat = JsonLines()
        self.lines = 0  # lines written or queued
        self.dropped_lines = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._queue: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
        self._pending = 0  # bytes queued for the thread and not yet written
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._template: tuple[str, bool] = ("", False)

    def configure(self, settings: ProxySettings) -> None:
        key = (settings.log_format_upstream, settings.log_format_escape_json)
        if key != self._template:
            self._template = key
            self.format = compile_template(*key) if key[0] else JsonLines()

    def write(self, ex: Exchange, labels: tuple[str, str, str, str, str], end: float, sent: int,
              received: int) -> None:
        line = self.format(ex, labels, end, sent, received, time.time())
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand what is buffered to the writer thread (or drop it, counted, if the thread is too far behind)."""
        if not self._buffer:
            return
        data, count = b"".join(self._buffer), len(self._buffer)
        self._buffer, self._buffered = [], 0
        with self._lock:
            if self._pending + len(data) > self.max_pending:
                self.dropped_lines += count
                return
            self._pending += len(data)
            self._idle.clear()
        self.lines += count
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pyngress-access-log", daemon=True)
            self._thread.start()
        self._queue.put((data, count))

    def close(self, timeout: float = 2.0) -> None:
        """Flush, let the thread write what it has (up to `timeout`), and stop it."""
        self.flush()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def wait_written(self, timeout: float = 5.0) -> bool:
        """For tests and shutdown: block until every queued buffer is written."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            data, _ = item
            try:
                for piece in _pieces(data):
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(self.fd, view):]
            except OSError:
                pass  # stdout closed: nothing sensible to do with the lines
            with self._lock:
                self._pending -= len(data)
                if not self._pending:
                    self._idle.set()


def _pieces(data: bytes, limit: int = PIPE_BUF) -> list[bytes]:
    """Cut at line ends into writes of at most `limit` bytes (a longer line goes alone): a write of up to
    PIPE_BUF bytes to a pipe is atomic, so the lines of several workers sharing stdout never interleave."""
    if len(data) <= limit:
        return [data]
    out = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + limit) + 1
        if end <= start:  # one line longer than the limit
            end = data.find(b"\n", start) + 1 or len(data)
        out.append(data[start:end])
        start = end
    return out
