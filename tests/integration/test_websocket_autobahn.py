"""Autobahn WebSocket cases through the proxy vs direct (kosoku): no case fails through it that passes direct.

CI runs the protocol cases 1-7 and 10 (framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
close handling, auto-fragmentation: 247 cases, a few seconds), on uvloop only (the production loop).
Left out: 9.* (throughput, up to 16 MB messages, tens of seconds) and 12.*/13.* (permessage-deflate,
minutes, and timing-bound: on a loaded machine some fail direct too). The whole suite is
`python bench/autobahn.py`.
"""

from __future__ import annotations

import asyncio

import uvloop
from ws_conformance import compare

CI_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]


def test_no_autobahn_case_fails_through_the_proxy_that_passes_direct() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        direct, proxied = runner.run(compare(CI_CASES, concurrency=8))
    assert len(direct) == len(proxied) > 200
    broken = {case: (proxied[case].behavior.value, proxied[case].behavior_close.value, proxied[case].result)
              for case, result in direct.items() if result.passed and not proxied[case].passed}
    assert not broken, broken
    assert sum(r.passed for r in proxied.values()) >= 240  # the pod is conformant: nearly all pass at all
