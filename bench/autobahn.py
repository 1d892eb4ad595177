"""The whole Autobahn WebSocket suite (kosoku) direct to a `websockets` echo pod and through pyngress.

    PYTHONPATH=src python bench/autobahn.py [case globs...]     # default: every case (a few minutes)

Prints pass counts and durations for both, the cases that pass direct and fail through the proxy (there
should be none), and the reverse. The 12.x/13.x permessage-deflate cases are timing-bound: on a loaded
machine some fail direct as well, and then a rerun of just those shows whether the proxy is to blame.
CI runs a subset (tests/integration/test_websocket_autobahn.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

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
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:] or None)))
