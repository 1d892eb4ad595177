"""`pyngress demo`: real echo pods behind a real ProxyServer, on 127.0.0.1 with free ports.

`run_demo` owns its event loop, so these tests are plain functions. The serving mode is tested through the
CLI in a subprocess: its output gives the port, a request proves it serves, SIGTERM must drain and exit 0.
"""

from __future__ import annotations

import http.client
import io
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest
from rich.console import Console

pytest.importorskip("pyngress.runtime.server", reason="the proxy server (runtime.server) is not written yet")

from pyngress.runtime.demo import demo_snapshot, parse_cpus, run_demo, send_requests, spread_table
from pyngress.runtime.echo import EchoServer

TIMEOUT = 20.0


def output_console() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_fifty_requests_over_five_pods_give_ten_each() -> None:
    console = output_console()
    assert run_demo(pods=5, requests=50, once=True, http_port=0, console=console) == 0
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rows = re.findall(r"(demo-pod-\d+)\s*│\s*127\.0\.0\.1:\d+\s*│\s*(\d+)\s*│\s*(\d+)%", text)
    assert rows == [(f"demo-pod-{i}", "10", "20") for i in range(1, 6)], text
    assert re.search(r"total\s*│\s*│\s*50\s*│\s*100%", text), text
    assert "Serving on" not in text


def test_cpus_1_1_2_4_get_80_requests_as_10_10_20_40() -> None:
    console = output_console()
    assert run_demo(cpus=[1, 1, 2, 4], requests=80, once=True, http_port=0, console=console) == 0
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rows = re.findall(r"(demo-pod-\d+)\s*│\s*127\.0\.0\.1:\d+\s*│\s*([\d.]+)\s*│\s*(\d+)\s*│\s*([\d.]+)%", text)
    assert rows == [("demo-pod-1", "1", "10", "12.5"), ("demo-pod-2", "1", "10", "12.5"),
                    ("demo-pod-3", "2", "20", "25"), ("demo-pod-4", "4", "40", "50")], text
    assert "80 requests, round robin weighted by CPU over 4 pods" in text
    assert re.search(r"total\s*│\s*│\s*8\s*│\s*80\s*│\s*100%", text), text


def test_demo_pods_with_cpus_are_weighted_by_their_requests() -> None:
    pods = []
    for i in range(1, 4):
        pod = EchoServer(f"demo-pod-{i}", 0.0)
        pod.host, pod.port = "127.0.0.1", 9100 + i
        pods.append(pod)
    snapshot = demo_snapshot(pods, [0.5, 1, 1.5])
    (route,) = snapshot.routes
    assert [(e.name, e.weight) for e in route.backend.endpoints] == [
        ("demo-pod-1", 1), ("demo-pod-2", 2), ("demo-pod-3", 3)]
    assert snapshot.problems == ()


def test_cpus_are_checked() -> None:
    assert parse_cpus("1, 0.5,2") == [1.0, 0.5, 2.0]
    for bad in ("1,,2", "x", "0", "-1", "nan", "inf", "0.0001"):
        with pytest.raises(ValueError):
            parse_cpus(bad)
    with pytest.raises(ValueError):
        run_demo(cpus=[], once=True, http_port=0, console=output_console())


def test_the_cpus_option_overrides_pods_and_rejects_bad_values() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "120"}
    command = [sys.executable, "-m", "pyngress", "demo", "--once", "--http-port", "0", "--pods", "9"]
    done = subprocess.run([*command, "--cpus", "1,3", "--requests", "8"], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 requests, round robin weighted by CPU over 2 pods" in done.stdout
    assert re.search(r"demo-pod-2\s*│[^│]*│\s*3\s*│\s*6\s*│\s*75%", done.stdout), done.stdout
    bad = subprocess.run([*command, "--cpus", "1,two"], capture_output=True, text=True, encoding="utf-8", env=env,
                         timeout=TIMEOUT, check=False)
    assert bad.returncode == 2 and "Invalid value for '--cpus': 'two' is not a number of cores" in bad.stderr


def test_port_in_use_is_a_clear_error_with_exit_code_2() -> None:
    console = output_console()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_demo(pods=1, requests=1, once=True, http_port=port, console=console) == 2
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"port {port} on 127.0.0.1 is already in use" in text and "--http-port" in text
    assert len(text.strip().splitlines()) == 1


def test_demo_manifests_compile_to_one_route_over_every_pod() -> None:
    pods = []
    for i, port in enumerate((9101, 9102, 9103), start=1):
        pod = EchoServer(f"demo-pod-{i}", 0.0)
        pod.host, pod.port = "127.0.0.1", port
        pods.append(pod)
    snapshot = demo_snapshot(pods)
    (route,) = snapshot.routes
    assert (route.host, route.path, route.backend.key) == ("", "/", "default/demo:http")
    assert [(e.key, e.name) for e in route.backend.endpoints] == [
        ("127.0.0.1:9101", "demo-pod-1"), ("127.0.0.1:9102", "demo-pod-2"), ("127.0.0.1:9103", "demo-pod-3")]
    assert snapshot.problems == ()


async def test_requests_to_a_dead_proxy_count_as_failed_and_show_in_the_table() -> None:
    with socket.socket() as unused:  # bound but not listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        counts, failed = await send_requests("127.0.0.1", unused.getsockname()[1], 3)
    assert counts == Counter() and failed == 3
    pod = EchoServer("demo-pod-1", 0.0)
    console = output_console()
    console.print(spread_table([pod], Counter({"demo-pod-1": 1}), 3, "http://x"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"failed\s*│\s*│\s*3\s*│\s*75%", text) and re.search(r"total\s*│\s*│\s*4\s*│", text), text


def test_serving_demo_answers_curl_and_drains_on_sigterm() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "pyngress", "demo", "--pods", "2", "--requests", "4",
                             "--http-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", env=env)
    try:
        port = _serving_port(proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        conn.request("GET", "/hello")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("X-Pod", "").startswith("demo-pod-")
        resp.read()
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def _serving_port(proc: subprocess.Popen[str]) -> int:
    """Read the demo's output (in a thread, so the wait is bounded) until the `Serving on` line."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    while line := lines.get(timeout=TIMEOUT):
        seen.append(line)
        if match := re.search(r"Serving on http://127\.0\.0\.1:(\d+) — try: curl", line):
            return int(match.group(1))
    raise AssertionError("demo exited before serving:\n" + "".join(seen))
