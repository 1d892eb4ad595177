"""`pyngress demo`: a whole cluster's worth of load balancing in one process, in a few seconds.

Theory of operation. `run_demo` starts N echo pods (`runtime.echo`) on 127.0.0.1, each on its own free port.
It describes them the way a cluster would (a Service `demo`, one EndpointSlice per pod, an Ingress for `/`),
as YAML text compiled by the same config package that file mode and the cluster use, so the demo exercises
the real path from manifests to routes. Each pod needs its own slice because an EndpointSlice carries one
port list for all of its endpoints, and our pods share an address but not a port.

With `cpus` (`pyngress demo --cpus 1,1,2,4`) each pod also gets a Pod manifest requesting that many cores,
and the Service asks `pyngress.io/weight-by: cpu` (`config.weights`): the pods' weights follow their CPU
requests, so with smooth weighted round robin 80 requests over 1,1,2,4 cores are exactly 10/10/20/40.

It then starts a `ProxyServer` with that Snapshot, sends the requests through it on one keep-alive
connection (reconnecting if the proxy closes it), tallies the `X-Pod` header of each answer and prints how
they spread. With `once` it drains and returns; otherwise it keeps serving until SIGINT/SIGTERM so the user
can try it with curl. The small client here is deliberately naive: it is not the proxy's hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pyngress.config import CompileOptions, compile_snapshot, parse_manifest
from pyngress.model import KubeObject, Problem, Snapshot
from pyngress.runtime.echo import EchoServer, start_echo

if TYPE_CHECKING:
    from pyngress.runtime.server import ProxyServer

NAMESPACE = "default"
REQUEST_TIMEOUT = 10.0  # per request: a demo that hangs is worse than one that says what failed
DRAIN_GRACE = 5.0

MAX_CPUS = 1000.0  # cores per demo pod; the least is 1m (0.001), the Kubernetes CPU precision

SERVICE_AND_INGRESS = """\
apiVersion: v1
kind: Service
metadata: {{name: demo, namespace: default, annotations: {annotations}}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: demo, namespace: default}}
spec:
  ingressClassName: pyngress
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: demo, port: {{name: http}}}}}}}}
"""
WEIGHT_BY_CPU = "{pyngress.io/weight-by: cpu}"

POD = """\
---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: default}}
spec:
  containers:
  - {{name: echo, image: pyngress/echo, resources: {{requests: {{cpu: {millis}m}}}}}}
"""

POD_SLICE = """\
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {pod}
  namespace: default
  labels: {{kubernetes.io/service-name: demo}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: ["{address}"]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: {pod}}}
"""


def demo_manifests(pods: Sequence[EchoServer], cpus: Sequence[float] | None = None) -> str:
    """The Service, Ingress and slices; with `cpus` (one per pod), Pods requesting them and weight-by: cpu."""
    text = SERVICE_AND_INGRESS.format(annotations=WEIGHT_BY_CPU if cpus is not None else "{}")
    text += "".join(POD_SLICE.format(pod=p.pod, port=p.port, address=p.host) for p in pods)
    if cpus is not None:
        text += "".join(POD.format(pod=p.pod, millis=millicores(c)) for p, c in zip(pods, cpus, strict=True))
    return text


def millicores(cores: float) -> int:
    return round(cores * 1000)


def parse_cpus(text: str) -> list[float]:
    """ "1,1,2,4" -> [1.0, 1.0, 2.0, 4.0]: cores per demo pod. ValueError saying what is wrong."""
    cpus = []
    for item in text.split(","):
        try:
            cores = float(item.strip())
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not a number of cores") from None
        if not 0.001 <= cores <= MAX_CPUS:  # also refuses nan and inf
            raise ValueError(f"{item.strip()!r}: each pod needs from 0.001 to {MAX_CPUS:g} cores")
        cpus.append(cores)
    return cpus


def demo_snapshot(pods: Sequence[EchoServer], cpus: Sequence[float] | None = None) -> Snapshot:
    """Compile the demo manifests. They are ours, so any Problem is a bug: raise it."""
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for doc in yaml.safe_load_all(demo_manifests(pods, cpus)):
        obj, found = parse_manifest(doc, "demo")
        problems.extend(found)
        if obj is not None:
            objects.append(obj)
    snapshot = compile_snapshot(objects, CompileOptions(), problems=problems)
    if snapshot.problems:
        raise RuntimeError("demo manifests do not compile: " + "; ".join(map(str, snapshot.problems)))
    return snapshot


def run_demo(pods: int = 5, requests: int = 50, once: bool = False, http_port: int = 8080,
             host: str = "127.0.0.1", console: Console | None = None, cpus: Sequence[float] | None = None,
             https_port: int | None = None, admin_port: int | None = None) -> int:
    """Run the demo on its own event loop (uvloop when installed); returns the exit code. `cpus`, when given,
    sets the number of pods (overriding `pods`) and the cores each one requests (see the module docstring)."""
    if cpus is not None:
        pods = len(cpus)
        if not pods or any(millicores(c) < 1 for c in cpus):
            raise ValueError(f"cpus must be at least one positive number of cores, not {list(cpus)}")
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_demo(pods, requests, once, http_port, host, console or Console(), cpus, https_port,
                                admin_port))


async def _demo(pods: int, requests: int, once: bool, http_port: int, host: str, console: Console,
                cpus: Sequence[float] | None, https_port: int | None = None,
                admin_port: int | None = None) -> int:
    from pyngress.runtime.server import ProxyServer  # the data plane: imported only when used

    echoes = [await start_echo(f"demo-pod-{i}") for i in range(1, pods + 1)]
    try:
        server = ProxyServer(demo_snapshot(echoes, cpus))
        try:
            port = await server.listen(host, http_port)
        except OSError as exc:
            console.print(_listen_error(host, http_port, exc), highlight=False)
            return 2
        admin = None if admin_port is None else await _start_admin(server, host, admin_port, console)
        try:
            https_url = ""
            if https_port is not None:  # issue 4: the same pods over TLS, with a generated certificate
                try:
                    https_url = await _listen_https(server, host, https_port)
                except OSError as exc:
                    console.print(_listen_error(host, https_port, exc).replace("--http-port", "--https-port"),
                                  highlight=False)
                    return 2
            return await _show_and_serve(echoes, requests, once, _client_host(host), port, console, cpus,
                                         https_url)
        finally:
            await server.drain(grace=DRAIN_GRACE)
            if admin is not None:
                await admin.close()
    finally:
        for echo in echoes:
            await echo.close()


async def _start_admin(server: Any, host: str, port: int, console: Console) -> Any:
    """The admin listener with the dashboard (issue 8); the demo goes on without it if the port is taken."""
    from pyngress.observability import events
    from pyngress.observability.wiring import admin_url, start_admin

    events.config_loaded(server.snapshot.version)

    admin = await start_admin(server, host, port)
    if admin is None:
        console.print(f"[yellow]warning:[/] admin port {port} is taken: no dashboard (try --admin-port 0)",
                      highlight=False)
    else:
        console.print(f"Dashboard: {admin_url(host, admin.port)}/   (metrics: /metrics, status: /status)",
                      highlight=False)
    return admin
async def _listen_https(server: ProxyServer, host: str, port: int) -> str:
    from pyngress.runtime.https_listener import listen_https
    from pyngress.runtime.tls_contexts import TLSContexts, fake_certificate

    bound = await listen_https(server, host, port, contexts=TLSContexts(*fake_certificate(time.time())))
    client = _client_host(host)
    return f"https://[{client}]:{bound}" if ":" in client else f"https://{client}:{bound}"


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"[red]error:[/] port {port} on {host} is already in use; pick another with --http-port "
                "(0 picks a free one)")
    return f"[red]error:[/] cannot listen on {host}:{port}: {exc.strerror or exc}; try another --http-port"


def _client_host(host: str) -> str:
    """Where to connect to reach a listener on `host` (a wildcard address is reachable on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


async def _show_and_serve(echoes: Sequence[EchoServer], requests: int, once: bool, host: str, port: int,
                          console: Console, cpus: Sequence[float] | None, https_url: str = "") -> int:
    with Progress(TextColumn("sending requests"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("send", total=requests)
        counts, failed = await send_requests(host, port, requests, lambda: progress.advance(task))
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    console.print(spread_table(echoes, counts, failed, url, cpus))
    if once:
        return 1 if failed else 0
    console.print(f"Serving on {url} — try: curl {url}/   (Ctrl-C to stop)", highlight=False)
    if https_url:
        console.print(f"and on {https_url} — try: curl -k {https_url}/   (a generated self-signed certificate)",
                      highlight=False)
    await _until_stopped()
    console.print("Stopping: draining connections.", highlight=False)
    return 0


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def spread_table(echoes: Sequence[EchoServer], counts: Counter[str], failed: int, url: str,
                 cpus: Sequence[float] | None = None) -> Table:
    """pod, address, (cpus,) requests, share per pod; then the failed requests, if any, and the total."""
    total = sum(counts.values()) + failed
    how = "round robin weighted by CPU" if cpus is not None else "round robin"
    table = Table(title=f"{total} requests, {how} over {len(echoes)} pods", caption=f"through {url}")
    columns = [("pod", "left"), ("address", "left"), ("requests", "right"), ("share", "right")]
    if cpus is not None:
        columns.insert(2, ("cpus", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]

    def row(first: str, address: str, count: int, cores: str) -> None:
        cells = [first, address, str(count), _share(count, total)]
        table.add_row(*(cells if cpus is None else [*cells[:2], cores, *cells[2:]]))

    for echo, cores in zip(echoes, cpus if cpus is not None else [0.0] * len(echoes), strict=True):
        row(echo.pod, f"{echo.host}:{echo.port}", counts[echo.pod], f"{cores:g}")
    if failed:
        row("[red]failed[/]", "", failed, "")
    table.add_section()
    row("total", "", total, f"{sum(cpus or ()):g}")
    return table


def _share(part: int, total: int) -> str:
    """ "20%", or "12.5%" when a whole number would round (10 of 80 is not 12%)."""
    if not total:
        return "-"
    percent = 100 * part / total
    return f"{percent:.0f}%" if percent.is_integer() else f"{percent:.1f}%"


# -- a deliberately small HTTP/1.1 client ---------------------------------------------------------------


async def send_requests(host: str, port: int, requests: int, sent: Callable[[], None] = lambda: None
                        ) -> tuple[Counter[str], int]:
    """GET / `requests` times over keep-alive; returns (answers per X-Pod, failed requests). `sent` is
    called after each request (progress)."""
    counts: Counter[str] = Counter()
    failed = 0
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        for _ in range(requests):
            pod, conn = await _one_request(host, port, conn)
            if pod:
                counts[pod] += 1
            else:
                failed += 1
            sent()
    finally:
        if conn is not None:
            conn[1].close()
    return counts, failed


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _one_request(host: str, port: int, conn: Conn | None) -> tuple[str, Conn | None]:
    """(pod that answered, or "" on failure; the connection to reuse). Retries once on a fresh connection,
    since a keep-alive connection may be closed by the proxy just as we reuse it."""
    for attempt in range(2):
        try:
            if conn is None or attempt:
                if conn is not None:
                    conn[1].close()
                conn = None
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT)
            status, headers = await asyncio.wait_for(_get(*conn), REQUEST_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            continue
        keep = "close" not in headers.get("connection", "").lower()
        if not keep:
            conn[1].close()
        return (headers.get("x-pod", "") if status == 200 else ""), (conn if keep else None)
    if conn is not None:
        conn[1].close()
    return "", None


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, dict[str, str]]:
    writer.write(b"GET / HTTP/1.1\r\nHost: demo.local\r\nUser-Agent: pyngress-demo\r\n\r\n")
    await writer.drain()
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = (line.partition(":") for line in lines[1:])
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    await _skip_body(reader, headers)
    return status, headers


async def _skip_body(reader: asyncio.StreamReader, headers: dict[str, Any]) -> None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers end with an empty line
            pass
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await reader.read()  # delimited by close
