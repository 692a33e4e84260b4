"""The C++ scorer of two builds, side by side: is a change to ``csrc/subspace_scores.cpp`` free?

Each argument is a source tree whose extension is built in place (for the commit before a
change: ``git worktree add /tmp/before HEAD && cd /tmp/before && MASC_FAST_BUILD_EXT=1 python
setup.py build_ext --inplace``). The trees take turns, each in a fresh single-threaded process,
for ``--rounds`` rounds; a shape's time is the least thread CPU time of 40 calls over all rounds
(thread time, not wall time: this shared 2-core box steals wall time by 10-30 %).

    python bench/ab_cpp_scoring.py /tmp/before .
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

#: (n, d, R, K, every how many rows one is all zero: 0 for none), narrow layers first: the
#: epilogue's share of the time is largest there.
SHAPES = [(20000, 64, 30, 10, 0), (20000, 64, 30, 10, 50), (10000, 128, 60, 10, 50)]
SHAPES += [(10000, 512, 300, 10, 0)]

_CHILD = """
import json, sys, time, torch
import masc_fast
from masc_fast.backends import cpp_ops
out = {"_from": masc_fast.__file__}
for n, d, r, k, zero_every in json.loads(sys.argv[1]):
    torch.manual_seed(0)
    x = torch.randn(n, d)
    if zero_every:
        x[::zero_every] = 0
    basis = torch.linalg.qr(torch.randn(d, r))[0].contiguous()
    offsets = torch.linspace(0, r, k + 1).long()
    best = float("inf")
    for _ in range(40):
        start = time.thread_time()
        cpp_ops.subspace_scores(x, basis, offsets, threads=1)
        best = min(best, time.thread_time() - start)
    out[f"n={n} d={d} R={r} K={k} zero rows 1/{zero_every or 'none'}"] = best
print(json.dumps(out))
"""


def time_tree(tree: Path) -> dict[str, float]:
    """One round in a fresh process importing masc_fast from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(SHAPES)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    times = json.loads(result.stdout.splitlines()[-1])
    source = Path(times.pop("_from")).resolve()
    if not source.is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: masc_fast was imported from {source}, not from this tree")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    for round_ in range(args.rounds):
        for name in ("before", "after"):
            for shape, seconds in time_tree(getattr(args, name)).items():
                best[name][shape] = min(best[name].get(shape, seconds), seconds)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    print("| shape | before (ms) | after (ms) | after / before |")
    print("|---|---|---|---|")
    for shape, before in best["before"].items():
        after = best["after"][shape]
        print(f"| {shape} | {before * 1e3:.2f} | {after * 1e3:.2f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
