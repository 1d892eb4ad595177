"""The dashboard in a real browser: `pyngress demo` serves it, headless Chromium (Debian's `chromium`, driven
by Playwright through `executable_path`; never a downloaded browser) loads it, and the bars it draws must be
the numbers /status reports: 10 per pod for the demo's 50 requests over 5 pods.

CI installs chromium (.ci/run); on a machine without it the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]
DEADLINE = 30.0

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed "
                                "(apt-get install chromium; CI installs it)")


def _dashboard_url(out: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = re.search(r"Dashboard: (http://\S+)", out.read_text(errors="replace"))
        if found and "Serving on" in out.read_text(errors="replace"):
            return found.group(1)
        assert proc.poll() is None, f"pyngress demo exited: {out.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no dashboard URL in the demo's output: {out.read_text()}")


def _status(url: str) -> Any:
    with urllib.request.urlopen(url + "status", timeout=5) as response:
        return json.loads(response.read())


def test_dashboard_shows_the_demo_spread_as_status_reports_it(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        command = [sys.executable, "-m", "pyngress", "demo", "--http-port", "0", "--admin-port", "0"]
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "200"})
    try:
        url = _dashboard_url(out, proc)
        with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            # a fresh profile directory per run (Playwright passes it as --user-data-dir)
            browser = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                           viewport={"width": 1100, "height": 760})
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function(
                    """() => { const bars = document.querySelectorAll('svg[data-service="default/demo"] g.bar');
                               return bars.length === 5 && [...bars].every(b => b.dataset.count === '10'); }""",
                    timeout=DEADLINE * 1000)
                bars = page.eval_on_selector_all(
                    'svg[data-service="default/demo"] g.bar',
                    "bars => bars.map(b => [b.dataset.endpoint, b.dataset.pod, "
                    "b.querySelector('.count').textContent])")
                figures = page.inner_text('section[data-service="default/demo"] [data-figure="requests"] b')
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                if os.environ.get("PYNGRESS_DASHBOARD_PNG"):  # how docs/dashboard.png is made
                    shutil.copy(tmp_path / "dashboard.png", os.environ["PYNGRESS_DASHBOARD_PNG"])
            finally:
                browser.close()
        status = _status(url)
        served = {e["endpoint"]: e for e in status["endpoints"]}
        assert len(bars) == 5
        for endpoint, pod, shown in bars:
            assert served[endpoint]["pod"] == pod
            assert int(shown) == served[endpoint]["requests_last_minute"] == served[endpoint]["requests"] == 10
        assert figures == "50" == str(status["services"][0]["requests_last_minute"])
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
