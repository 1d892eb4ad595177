"""The build: pyngress's hot path compiled with mypyc by default, pure Python where that cannot be done.

The hot-path modules are plain, strictly typed Python; mypyc compiles them to C extensions, which cuts
pyngress's own CPU per request by about 40 % (bench/hotpath.py: 7.4 -> 4.8 µs) and raises throughput by
about 20 % (bench/run.py). `PYNGRESS_MYPYC` chooses:
- unset (`pip install .`): compiled when mypyc is there (pyproject.toml asks for mypy to build) and a C compiler
  works; otherwise a pure-Python install, with a warning saying why. Both behave the same: CI runs the whole
  test suite against each.
- `0`: pure Python, nothing compiled.
- `1`: compiled, and a failure to compile is an error (CI's compiled build).
Editable installs (`pip install -e .`) are always pure Python: compiled modules beside the sources would
shadow every later edit.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

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

MODE = os.environ.get("PYNGRESS_MYPYC", "")


class OptionalBuildExt(build_ext):
    """Compiles the hot path; unless PYNGRESS_MYPYC=1, a failure leaves a working pure-Python install."""

    def run(self) -> None:
        if getattr(self, "editable_mode", False) or self.inplace:
            self.extensions = []  # editable: the sources themselves must run
            return
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, a mypyc error...: distutils has no common base
            if MODE == "1":
                raise
            print(f"pyngress: compiling the hot path failed ({exc}); installing pure Python", file=sys.stderr)
            for ext in self.extensions:
                built = self.get_ext_fullpath(ext.name)
                if os.path.exists(built):
                    os.remove(built)
            self.extensions = []


def compiled_modules() -> list:
    # only for the commands that build: mypycify type-checks the whole package first (~20 s), and pip also
    # runs this file to read metadata; an editable install runs `editable_wheel` and never compiles
    if MODE == "0" or not {"bdist_wheel", "build", "build_ext", "install"} & set(sys.argv):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if MODE == "1":
            raise
        print("pyngress: mypyc is not installed; installing pure Python", file=sys.stderr)
        return []
    # pip builds in an isolated environment that has mypy but not our dependencies: their types are then Any
    # (the compiled code calls them dynamically, as Python would); CI's compiled build has them all.
    relaxed = ["--ignore-missing-imports", "--no-warn-return-any", "--no-warn-unused-ignores",
               "--allow-subclassing-any"]
    try:
        return mypycify([*HOT_PATH, *relaxed], opt_level="3")
    except (Exception, SystemExit) as exc:  # mypy's type check failed: it exits rather than raises
        if MODE == "1":
            raise
        print(f"pyngress: mypyc could not translate the hot path ({exc}); installing pure Python", file=sys.stderr)
        return []


setup(ext_modules=compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
