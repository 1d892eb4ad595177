"""What metrics and the access log cost per request: `python bench/observe_cost.py [--baseline TREE]`.

Runs `bench/hotpath.py`'s round-robin loop (in-memory transports, no syscalls) in fresh processes, interleaved
over several rounds, timed in process CPU (the access log's writer thread included; a shared machine's other
load mostly excluded), and prints the medians:
- this tree, access log off (metrics are always on);
- this tree, with the JSON access log;
- with `--baseline TREE`: a checkout of the code before (e.g. `git worktree add /tmp/base main`), whose
  difference to the first row is what the metrics cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SNIPPET = """
import time, uvloop, hotpath
time.perf_counter = time.process_time  # the loop's clock: CPU of this process, not wall time
kw = {"access_log": True} if %r else {}
print(uvloop.run(hotpath.measure(*hotpath.VARIANTS["round_robin"], **kw)))
"""


def one(tree: Path, access_log: bool) -> float:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree / 'bench'}"}
    out = subprocess.run([sys.executable, "-c", SNIPPET % access_log], env=env, check=True, text=True,
                         capture_output=True).stdout
    return float(out.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="source tree of the code before (has src/ and bench/)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"metrics": [], "metrics + access log": []}
    if args.baseline:
        rows = {"baseline": [], **rows}
    for _ in range(args.rounds):
        if args.baseline:
            rows["baseline"].append(one(args.baseline, False))
        rows["metrics"].append(one(HERE.parent, False))
        rows["metrics + access log"].append(one(HERE.parent, True))
    print(f"µs of CPU per request, round robin, median of {args.rounds} interleaved rounds:")
    first = statistics.median(next(iter(rows.values())))
    for name, values in rows.items():
        median = statistics.median(values)
        print(f"  {name:22} {median:6.2f} µs  {median - first:+5.2f} µs")


if __name__ == "__main__":
    main()
