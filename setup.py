"""Optional compiled build: `PYNGRESS_MYPYC=1 pip install --no-build-isolation .` (needs mypy installed).

The hot-path modules are plain, strictly typed Python; mypyc can compile them to C extensions, which cuts
pyngress's own CPU per request by about a third (bench/hotpath.py: 6.7 -> 4.7 µs). Without the variable this
is an ordinary pure-Python install (everything is configured in pyproject.toml). Do not combine it with an
editable install: the compiled modules would sit beside the sources and shadow every later edit.
"""

import os

from setuptools import setup

HOT_PATH = [
    "src/pyngress/runtime/http1.py",
    "src/pyngress/runtime/exchange.py",
    "src/pyngress/runtime/request_head.py",
    "src/pyngress/runtime/downstream.py",
    "src/pyngress/runtime/upstream.py",
    "src/pyngress/runtime/pool.py",
    "src/pyngress/runtime/cookies.py",
    "src/pyngress/runtime/picking.py",
    "src/pyngress/routing/table.py",
    "src/pyngress/routing/normalize.py",
    "src/pyngress/balancing/base.py",
    "src/pyngress/balancing/weighted.py",
    "src/pyngress/balancing/random_pick.py",
    "src/pyngress/balancing/load.py",
    "src/pyngress/balancing/stats.py",
    "src/pyngress/balancing/hashing.py",
    "src/pyngress/balancing/maglev.py",
    "src/pyngress/balancing/affinity.py",
    "src/pyngress/observability/recorder.py",  # called once per request (issue 8)
    "src/pyngress/observability/jsonlines.py",  # the access log line, once per request when on
    "src/pyngress/runtime/ws_frames.py",  # issue 7: WebSocket frame boundaries, per relayed chunk
    # read on every request: native attribute access instead of a dictionary or descriptor lookup
    "src/pyngress/model/settings.py",
    "src/pyngress/model/snapshot.py",
    "src/pyngress/runtime/state.py",
    "src/pyngress/health/outlier.py",
]

ext_modules = []
if os.environ.get("PYNGRESS_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(HOT_PATH, opt_level="3")

setup(ext_modules=ext_modules)
