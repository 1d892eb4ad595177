"""Per-worker request metrics, recorded once where a response completes. Compiled with the hot path (mypyc).

Theory of operation. Prometheus counters and histograms here are plain ints in plain objects, found without
building any label: `install` (once per configuration) maps every compiled route, by object identity, to a
`RouteSeries` that is keyed by its label values and lives as long as the worker, so counters never reset on a
reload. A request then costs one dict lookup for its route's series, one for its (status, method) `Cell`, one
for its endpoint, and one `bisect` per histogram over a constant tuple of bucket bounds. Nothing is formatted:
`observability.export` turns these objects into label sets and text only when /metrics or /status is asked.

The runtime calls, on its event-loop thread:
- `finished(ex)` when a response is complete on the client side (Downstream.finished): status, durations and
  sizes of the request; the access-log line when the log is on;
- `abandoned(ex)` for a request whose client went away before its response was complete (nginx's 499);
- `attempt_failed(endpoint)` when an attempt on an endpoint failed and was retried or answered with an error;
- `connection_opened(conn)` per accepted connection, `listening(host, port)` per listener, `tick(now)` from the
  server's ticker (keeps a one-minute window of per-endpoint totals for the dashboard, flushes the log).

Durations use `time.perf_counter` (sub-microsecond, unlike uvloop's millisecond `loop.time()`): the request's
from when its Exchange is created (head parsed) to the end of the response; the upstream's from the last
dispatch to an endpoint to the end of the response (nginx's $upstream_response_time of the last attempt).
Sizes are what the connection read and wrote between the end of the previous response and the end of this
one: exact without pipelining, and the totals stay exact with it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from pyngress.model import Endpoint, ProxySettings, Route
    from pyngress.runtime.downstream import Downstream
    from pyngress.runtime.exchange import Exchange
    from pyngress.runtime.state import Serving

# Seconds. Prometheus' default buckets (ingress-nginx's for request_duration_seconds) with finer ones in front:
# a proxy on a LAN answers in well under 5 ms, and the dashboard's p50 should say how far under.
DURATION_BUCKETS: Final[tuple[float, ...]] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Bytes: ingress-nginx's sizeBuckets for request_size and response_size.
SIZE_BUCKETS: Final[tuple[float, ...]] = (10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0)

METHODS: tuple[bytes, ...] = (b"OTHER", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS",
                              b"TRACE", b"CONNECT")
_METHOD_INDEX: Final[dict[bytes, int]] = {m: i for i, m in enumerate(METHODS)}
WINDOW_SECONDS = 60  # the dashboard's "last minute"
WINDOW_STEP = 5.0  # seconds between two samples of the totals: a sample walks every cell, so not too often
_EWMA_KEEP = math.exp(-WINDOW_STEP / 10.0)
FORGET_AFTER = 600.0  # seconds a route or endpoint stays in /metrics after it left the configuration

# (namespace, ingress, service, path, host): a route's labels, as ingress-nginx names them
RouteLabels = tuple[str, str, str, str, str]
UNROUTED: RouteLabels = ("", "", "", "", "")  # no rule and no default backend (404), or a refused request
# Final aliases: the compiled build reads them from C statics, not from the module's globals on every call
_clock: Final = perf_counter
_bucket: Final = bisect_left


class AccessLogSink(Protocol):
    """observability.accesslog.AccessLog; a Protocol so that this compiled module does not import it."""

    def configure(self, settings: ProxySettings) -> None: ...
    def write(self, ex: Exchange, labels: RouteLabels, end: float, sent: int, received: int) -> None: ...
    def flush(self) -> None: ...


class HealthView(Protocol):
    """What /status and /metrics read about an endpoint's health (the health checker implements it)."""

    def endpoint_health(self, key: str) -> tuple[str, bool, int]:
        """(state: "healthy", "unhealthy" or "unknown"; ejected now; ejections so far) of `Endpoint.key`."""
        ...


WindowEntry = tuple[float, dict[str, int], dict[str, int], dict[str, list[int]]]


class Cell:
    """One (route, status, method): the counters and histograms of nginx_ingress_controller_* series."""

    __slots__ = ("count", "duration", "duration_sum", "request_size", "request_size_sum", "response_size",
                 "response_size_sum", "upstream", "upstream_count", "upstream_sum")

    def __init__(self) -> None:
        self.count = 0
        self.duration = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative; last is +Inf
        self.duration_sum = 0.0
        self.upstream = [0] * (len(DURATION_BUCKETS) + 1)
        self.upstream_sum = 0.0
        self.upstream_count = 0
        self.request_size = [0] * (len(SIZE_BUCKETS) + 1)
        self.request_size_sum = 0
        self.response_size = [0] * (len(SIZE_BUCKETS) + 1)
        self.response_size_sum = 0


class RouteSeries:
    """All cells of one route label set. Key of a cell: status << 4 | method index."""

    __slots__ = ("cells", "labels", "log", "removed_at")

    def __init__(self, labels: RouteLabels) -> None:
        self.labels = labels
        self.log = True  # the route's enable-access-log annotation
        self.cells: dict[int, Cell] = {}
        self.removed_at = 0.0  # monotonic time it left the configuration; 0 while configured

    def cell(self, key: int) -> Cell:
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        return cell


class EndpointCell:
    """One endpoint (Endpoint.key): responses by status class, failed attempts."""

    __slots__ = ("address", "codes", "ewma", "failures", "namespace", "pod", "removed_at", "sampled", "service",
                 "upstream_sum")

    def __init__(self, key: str, namespace: str, service: str, pod: str) -> None:
        self.address = key
        self.namespace = namespace
        self.service = service
        self.pod = pod
        self.codes = [0] * 10  # responses by status // 100
        self.upstream_sum = 0.0  # seconds of upstream response time of the responses counted in `codes`
        self.removed_at = 0.0  # as RouteSeries.removed_at
        self.ewma = -1.0  # seconds: EWMA of the mean upstream time per window step (-1: no sample yet)
        self.sampled = (0, 0.0)  # (responses, upstream_sum) at the last window step
        self.failures = 0  # attempts that ended without a usable response (connect error, reset, timeout)


def route_labels(route: Route) -> RouteLabels:
    namespace, _, ingress = route.ingress.partition("/")
    if not ingress:  # the default backend's route: "(default backend)"
        namespace, ingress = route.backend.namespace, ""
    return (namespace, ingress, route.backend.service, route.path, route.host)


class Recorder:
    """One worker's request metrics. See the module docstring for who calls what."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str, str, str], RouteSeries] = {}  # every label set ever seen
        self.by_route: dict[int, RouteSeries] = {}  # id(Route) of the serving config -> its series
        self.endpoints: dict[str, EndpointCell] = {}  # Endpoint.key -> cell; kept across reloads
        self.unrouted = self._series(UNROUTED)
        self.log: AccessLogSink | None = None  # set when the access log is on
        self.log_enabled = False  # the configuration's enable-access-log
        self.settings: ProxySettings | None = None
        self.sink: AccessLogSink | None = None  # the log writer, whether or not the config enables it
        self.accepted: dict[bytes, int] = {}  # local port (b"8080") -> connections accepted
        self.listeners: dict[bytes, str] = {}  # local port -> "address:port"
        # every WINDOW_STEP: (monotonic time, endpoint -> responses, endpoint -> 5xx, "ns/service" -> duration
        # buckets); the oldest entry is the baseline of the dashboard's "last minute" (60 to 65 s). Starts
        # with all zeros, so that what was served before the first sample counts.
        self.window: deque[WindowEntry] = deque([(monotonic(), {}, {}, {})],
                                                maxlen=int(WINDOW_SECONDS / WINDOW_STEP) + 1)
        self._next_window = monotonic() + WINDOW_STEP
        self.health: HealthView | None = None  # set by health checking: per-endpoint state for /status

    # -- configuration (cold) ------------------------------------------------------------------------------

    def install(self, serving: Serving) -> None:
        """Map the new configuration's routes and endpoints to their (lasting) series."""
        routes = list(serving.snapshot.routes)
        if serving.default_route is not None:
            routes.append(serving.default_route)
        self.by_route = {id(r): self._series(route_labels(r)) for r in routes}
        for route in routes:
            self.by_route[id(route)].log = route.access_log
        now = monotonic()
        configured = {id(s) for s in self.by_route.values()}
        for series in self.series.values():
            series.removed_at = 0.0 if id(series) in configured or series is self.unrouted else \
                (series.removed_at or now)
        keys = {e.key for r in routes for e in r.backend.endpoints}
        for key, cell in self.endpoints.items():
            cell.removed_at = 0.0 if key in keys else (cell.removed_at or now)
        for route in routes:
            backend = route.backend
            for endpoint in backend.endpoints:
                if endpoint.key not in self.endpoints:
                    self.endpoints[endpoint.key] = EndpointCell(endpoint.key, backend.namespace, backend.service,
                                                                endpoint.name)
        self.log_enabled = serving.settings.enable_access_log
        self.settings = serving.settings
        if self.sink is not None:
            self.sink.configure(serving.settings)
        self.log = self.sink if self.log_enabled else None

    def set_sink(self, sink: AccessLogSink | None) -> None:
        self.sink = sink
        if sink is not None and self.settings is not None:
            sink.configure(self.settings)
        self.log = sink if self.log_enabled else None

    def _series(self, labels: RouteLabels) -> RouteSeries:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = RouteSeries(labels)
        return series

    def _route_series(self, route: Route | None) -> RouteSeries:
        if route is None:
            return self.unrouted
        series = self.by_route.get(id(route))
        if series is None:  # a request that started on a configuration swapped out since: rare
            series = self._series(route_labels(route))
        return series

    # -- per request (hot) ---------------------------------------------------------------------------------

    def finished(self, ex: Exchange) -> None:
        client = ex.client
        out, inn = client.bytes_out, client.bytes_in
        sent, received = out - client.bytes_out_mark, inn - client.bytes_in_mark
        client.bytes_out_mark, client.bytes_in_mark = out, inn
        self.record(ex, sent, received)

    def record(self, ex: Exchange, sent: int, received: int) -> None:
        """`finished` with the sizes already counted (by the HTTP/1.1 connection itself, natively compiled)."""
        # One function, locals only: this runs for every request (about 0.5 µs pure Python, less compiled).
        end = _clock()
        route = ex.route
        series = self.by_route.get(id(route)) if route is not None else self.unrouted
        if series is None:
            series = self._route_series(route)
        status = ex.status
        key = status << 4 | _METHOD_INDEX.get(ex.method, 0)
        cell = series.cells.get(key)
        if cell is None:
            cell = series.cell(key)
        cell.count += 1
        duration = end - ex.began
        cell.duration[_bucket(DURATION_BUCKETS, duration)] += 1
        cell.duration_sum += duration
        cell.request_size[_bucket(SIZE_BUCKETS, received)] += 1
        cell.request_size_sum += received
        cell.response_size[_bucket(SIZE_BUCKETS, sent)] += 1
        cell.response_size_sum += sent
        endpoint = ex.endpoint
        if endpoint is not None:
            upstream = end - ex.sent_at
            cell.upstream[_bucket(DURATION_BUCKETS, upstream)] += 1
            cell.upstream_sum += upstream
            cell.upstream_count += 1
            ecell = self.endpoints.get(endpoint.key)
            if ecell is not None and ex.response_started:  # from the endpoint, not our 502/504 about it
                ecell.codes[status // 100 if status < 1000 else 0] += 1
                ecell.upstream_sum += upstream
        log = self.log
        if log is not None and series.log:
            log.write(ex, series.labels, end, sent, received)

    # -- rare events ---------------------------------------------------------------------------------------

    def abandoned(self, ex: Exchange) -> None:
        """The client closed before its response was complete: counted and logged as nginx's 499."""
        if ex.status == 0 or not ex.response_started:
            ex.status = 499
        self.finished(ex)

    def refused(self, conn: Downstream, status: int, method: bytes, size: int) -> None:
        """A request refused before it became an Exchange (malformed, too large, timed out): the proxy wrote
        `size` bytes of response and closed. Counted and logged with no route, as nginx logs its 400s."""
        from pyngress.runtime.exchange import NO_BODY, Exchange

        conn.bytes_out += size
        ex = Exchange(conn, method, b"", b"", b"", NO_BODY, False, False)
        ex.status = status
        self.finished(ex)

    def attempt_failed(self, endpoint: Endpoint | None) -> None:
        if endpoint is not None:
            ecell = self.endpoints.get(endpoint.key)
            if ecell is not None:
                ecell.failures += 1

    def connection_opened(self, conn: Downstream) -> None:
        if conn.https:  # counted when the HTTPS listener accepted it, before (and whatever) the handshake
            return
        port = conn.peer.port  # our port, as bytes: connections are counted per listener
        self.accepted[port] = self.accepted.get(port, 0) + 1

    def accepted_on(self, port: int) -> None:
        """A connection accepted by a listener that is not a plain asyncio server (HTTPS: before its handshake,
        whether it becomes an HTTP connection, a passthrough relay, or fails)."""
        key = b"%d" % port
        self.accepted[key] = self.accepted.get(key, 0) + 1

    def listening(self, host: str, port: int) -> None:
        key = b"%d" % port
        self.listeners[key] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.accepted.setdefault(key, 0)

    def tick(self, now: float) -> None:
        """From the server's ticker: every WINDOW_STEP, remember the totals (the dashboard's window)."""
        wall = monotonic()  # not the loop's clock: uvloop's and asyncio's need not share an epoch
        if wall >= self._next_window:
            self._next_window = wall + WINDOW_STEP
            self.window.append(self.totals(wall))
            self.forget(wall - FORGET_AFTER)
            self._age_latencies()
        if self.sink is not None:
            self.sink.flush()

    def _age_latencies(self) -> None:
        """Each endpoint's latency EWMA, from the mean upstream time of the responses of the last step: costs
        nothing per request. Weight of the past exp(-step / 10 s), ingress-nginx's ewma DECAY_TIME."""
        keep = _EWMA_KEEP
        for cell in self.endpoints.values():
            count, total = sum(cell.codes), cell.upstream_sum
            before_count, before_total = cell.sampled
            if count > before_count:
                mean = (total - before_total) / (count - before_count)
                cell.ewma = mean if cell.ewma < 0 else cell.ewma * keep + mean * (1.0 - keep)
            cell.sampled = (count, total)

    def forget(self, before: float) -> None:
        """Drop the series of routes and endpoints that left the configuration before `before` (monotonic):
        with pods coming and going, /metrics would otherwise grow without bound. A request still in flight
        to a forgotten endpoint is counted on its route only."""
        gone = [k for k, s in self.series.items() if 0.0 < s.removed_at < before]
        for labels in gone:
            del self.series[labels]
        for key in [k for k, c in self.endpoints.items() if 0.0 < c.removed_at < before]:
            del self.endpoints[key]

    def totals(self, now: float) -> WindowEntry:
        """The counters the window keeps, as they are now."""
        services: dict[str, list[int]] = {}
        for series in self.series.values():
            if not series.cells:
                continue
            key = f"{series.labels[0]}/{series.labels[2]}"
            hist = services.get(key)
            if hist is None:
                hist = [0] * (len(DURATION_BUCKETS) + 1)
            for cell in series.cells.values():
                hist = [a + b for a, b in zip(hist, cell.duration, strict=True)]
            services[key] = hist
        return (now, {k: sum(c.codes) for k, c in self.endpoints.items()},
                {k: c.codes[5] for k, c in self.endpoints.items()}, services)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.flush()
