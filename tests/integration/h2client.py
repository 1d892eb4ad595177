"""A small HTTP/2 client for the tests, on the h2 library: many concurrent requests on one connection.

`H2Client.connect(port)` speaks h2c with prior knowledge; pass an SSLContext for TLS with ALPN h2. Responses
are read by one reader task; each `request` waits for its own stream. Request bodies are sent as the
server's windows allow. `hold_window=True` makes the client stop handing back received bytes until
`release()` (to test the server's response flow control).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

TIMEOUT = 10.0


@dataclass
class GoAway:
    last_stream_id: int
    error_code: int


@dataclass
class H2Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None  # RST_STREAM error code, when the server reset the stream
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold_window: bool) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.responses: dict[int, H2Response] = {}
        self.hold_window = hold_window
        self.held: list[tuple[int, int]] = []
        self.goaway: GoAway | None = None
        self._buf = b""
        self.settings_seen = asyncio.Event()
        self.window_open = asyncio.Event()
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, *, ssl_context: ssl.SSLContext | None = None, server_hostname: str = "",
                      hold_window: bool = False) -> H2Client:
        kwargs: dict[str, Any] = {}
        if ssl_context is not None:
            kwargs = {"ssl": ssl_context, "server_hostname": server_hostname or "localhost"}
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20, **kwargs)
        self = cls(reader, writer, hold_window)
        self.conn.initiate_connection()
        self.flush()
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.settings_seen.wait(), TIMEOUT)
        return self

    async def __aenter__(self) -> H2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def release(self) -> None:
        """Hand back every byte held so far, and stop holding."""
        self.hold_window = False
        for size, stream_id in self.held:
            self.conn.acknowledge_received_data(size, stream_id)
        self.held.clear()
        self.flush()

    def start(self, method: str, path: str, *, host: str = "example.com", headers: list[tuple[str, str]] = (),
              end: bool = True) -> int:  # type: ignore[assignment]
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", host), (":path", path), *headers]
        self.conn.send_headers(stream_id, [(n.encode(), v.encode()) for n, v in fields], end_stream=end)
        self.responses[stream_id] = H2Response()
        self.flush()
        return stream_id

    async def send_body(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.window_open.clear()
                await asyncio.wait_for(self.window_open.wait(), TIMEOUT)
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
            await self.writer.drain()
        if end:
            self.conn.end_stream(stream_id)
            self.flush()

    async def response(self, stream_id: int, timeout: float = TIMEOUT) -> H2Response:
        resp = self.responses[stream_id]
        await asyncio.wait_for(resp.done.wait(), timeout)
        return resp

    async def request(self, method: str, path: str, *, body: bytes | None = None, **kwargs: Any) -> H2Response:
        stream_id = self.start(method, path, end=body is None, **kwargs)
        if body is not None:
            await self.send_body(stream_id, body)
        return await self.response(stream_id)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(self._without_goaway(data))
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._handle(event)
                self.flush()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed.set()
            for resp in self.responses.values():
                resp.done.set()

    def _without_goaway(self, data: bytes) -> bytes:
        """GOAWAY frames are taken out and recorded here: h2 treats one as the end of everything, while a
        graceful GOAWAY (RFC 9113 6.8) lets the streams up to its last stream id complete."""
        self._buf += data
        out = bytearray()
        while len(self._buf) >= 9:
            length = int.from_bytes(self._buf[:3], "big")
            if len(self._buf) < 9 + length:
                break
            frame, self._buf = self._buf[: 9 + length], self._buf[9 + length :]
            if frame[3] == 0x7:
                self.goaway = GoAway(int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF,
                                     int.from_bytes(frame[13:17], "big"))
            else:
                out += frame
        return bytes(out)

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_seen.set()
            self.window_open.set()
        elif isinstance(event, h2.events.ResponseReceived):
            resp = self.responses[event.stream_id]  # type: ignore[index]
            resp.headers = list(event.headers or [])  # type: ignore[arg-type]
            resp.status = int(dict(resp.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data or b""  # type: ignore[index]
            size = event.flow_controlled_length or 0
            if self.hold_window:
                self.held.append((size, event.stream_id or 0))
            elif size:
                self.conn.acknowledge_received_data(size, event.stream_id or 0)
        elif isinstance(event, h2.events.TrailersReceived):
            self.responses[event.stream_id].trailers = list(event.headers or [])  # type: ignore[index,arg-type]
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].done.set()  # type: ignore[index]
        elif isinstance(event, h2.events.StreamReset):
            resp = self.responses.get(event.stream_id)  # type: ignore[arg-type]
            if resp is not None:
                resp.reset = int(event.error_code or 0)
                resp.done.set()
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_open.set()

