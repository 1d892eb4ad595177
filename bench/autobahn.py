"""The whole Autobahn WebSocket suite (kosoku) direct to a `websockets` echo pod and through pyngress.

    PYTHONPATH=src python bench/autobahn.py [case globs...]     # default: every case (a few minutes)

Prints pass counts and durations for both, the cases that pass direct and fail through the proxy (there
should be none), and the reverse, each with kosoku's verdict and duration both ways. The 12.x/13.x
permessage-deflate cases are timing-bound: the client, the echo pod and the proxy share one event loop (one
core), so a case that compresses a thousand large messages can run out of its time limit on a loaded
machine, direct as well. Cases that differ are therefore run again, alone, both ways (`RERUNS` times): a
case the proxy breaks fails through it every time; a timing-bound one passes on a rerun.
CI runs a subset (tests/integration/test_websocket_autobahn.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

import uvloop
from ws_conformance import compare


async def main(cases: list[str] | None) -> int:
    started = time.monotonic()
    direct, proxied = await compare(cases)
    elapsed = time.monotonic() - started
    ok_direct = {c for c, r in direct.items() if r.passed}
    ok_proxied = {c for c, r in proxied.items() if r.passed}
    print(f"{len(direct)} cases in {elapsed:.0f} s: {len(ok_direct)} pass direct, "
          f"{len(ok_proxied)} through pyngress")
    worse = sorted(ok_direct - ok_proxied)
    print("pass direct, fail through pyngress:", worse or "none")
    print("fail direct, pass through pyngress:", sorted(ok_proxied - ok_direct) or "none")
    differing = sorted((ok_direct ^ ok_proxied) | (set(direct) - ok_direct))
    for case in differing:
        print(f"  {case}: direct {_verdict(direct[case])}; proxied {_verdict(proxied[case])}")
    still_worse = []
    for case in differing:
        runs = [await compare([case], concurrency=1) for _ in range(RERUNS)]
        passes = [(d[case].passed, p[case].passed) for d, p in runs]
        print(f"  rerun alone {case}: (direct, proxied) passed = {passes}")
        if any(d for d, _ in passes) and not any(p for _, p in passes):
            still_worse.append(case)
    print("after reruns, pass direct and never through pyngress:", still_worse or "none")
    return 1 if still_worse else 0


RERUNS = 2


def _verdict(result: Any) -> str:
    return f"{result.behavior.value} in {result.duration} ms ({result.result[:90]!r})"


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:] or None)))
