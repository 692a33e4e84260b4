"""One process against two gloo ranks: the probe's wall time and the bytes the ranks exchange.

Two workloads, each the probe of one layer (the rows themselves: ``layers=["input"]``) with
corrupted and true labels, scored on the training rows and a test set:

* ``gram``: n = 40 000 rows, d = 1024, K = 10, streamed Grams: the ranks all-reduce
  2 label sets × K · d² float64 (160 MiB) once, then each solves K/2 classes;
* ``gram_trick``: n = 4 000 rows, d = 2048, K = 10 (400 rows per class, fewer than d), stored
  rows: each class's rows that live on the other rank travel to the class's owner
  (about n · d · 4 / 2 bytes per label set), then the owners solve their classes.

One process runs with every core's threads; each of the two ranks with one thread each (on
the 2-core machine the two sides use the same cores, so this measures the overhead of the
distribution, not a speed-up). Times are the slowest rank's, from after the group is joined to
the probe's return. ``python bench/bench_distributed.py`` prints the Markdown table of
bench/RESULTS.md; ``pytest bench/bench_distributed.py`` runs the same measurements under
pytest-benchmark.
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest
import torch
from torch import nn

import masc_fast
from masc_fast.testing.ranks import run_ranks, values
from masc_fast.testing.synthetic import structured_classes

WORKLOADS = {  # name: (rows, width, classes, strategy)
    "gram": (40_000, 1024, 10, "gram"),
    "gram_trick": (4_000, 2048, 10, "stored"),
}
if os.environ.get("MASC_FAST_BENCH_QUICK"):  # a seconds-long smoke run of the same code
    WORKLOADS = {"gram": (2_000, 64, 10, "gram"), "gram_trick": (400, 128, 10, "stored")}
N_TEST = 2_000
BATCH = 500


def _data(name: str):
    rows, width, classes, _ = WORKLOADS[name]
    x, y = structured_classes(rows + N_TEST, width, classes, seed=11)
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    noisy = y.clone()
    noisy[::5] = (noisy[::5] + 1) % classes  # a fifth of the labels corrupted
    return x[:rows], noisy[:rows], y[:rows], x[rows:], y[rows:]


def _batches(x, y, y_true, start, stop):
    return [
        (x[i : min(i + BATCH, stop)], y[i : min(i + BATCH, stop)], y_true[i : min(i + BATCH, stop)])
        for i in range(start, stop, BATCH)
    ]


def _probe(name: str, rank: int, world: int):
    """This rank's probe of ``name``: its half of the training and test rows (everything
    with ``world`` 1). Returns (seconds, components)."""
    x, y, y_true, x_test, y_test = _data(name)
    strategy = WORKLOADS[name][3]
    cut = [len(x) * r // world for r in range(world + 1)]
    test_cut = [len(x_test) * r // world for r in range(world + 1)]
    train = _batches(x, y, y_true, cut[rank], cut[rank + 1])
    lo, hi = test_cut[rank], test_cut[rank + 1]
    test = [
        (x_test[i : min(i + BATCH, hi)], y_test[i : min(i + BATCH, hi)])
        for i in range(lo, hi, BATCH)
    ]
    started = time.perf_counter()
    result = masc_fast.probe(
        nn.Flatten(), train, {"test": test}, layers=["input"], num_classes=WORKLOADS[name][2],
        strategy=strategy, progress=False, distributed=world > 1,
    )  # fmt: skip
    return time.perf_counter() - started, result.components["components"].tolist()


def _rank(rank: int, name: str):
    import torch.distributed as dist

    dist.barrier()
    return _probe(name, rank, dist.get_world_size())


def _all_reduce_rate(rank: int, megabytes: int) -> float:
    """Seconds of one float64 all-reduce of ``megabytes`` MiB (the best of three)."""
    import torch.distributed as dist

    tensor = torch.ones(megabytes * 2**20 // 8, dtype=torch.float64)
    best = float("inf")
    for _ in range(3):
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(tensor)
        best = min(best, time.perf_counter() - started)
    return best


def all_reduce_seconds(megabytes: int = 80) -> float:
    """The slowest rank's best time to all-reduce ``megabytes`` MiB over two gloo ranks."""
    with tempfile.TemporaryDirectory() as folder:
        return max(values(run_ranks(_all_reduce_rate, megabytes, folder=folder)))


def exchanged_bytes(name: str) -> int:
    """Bytes a rank sends in the fit of ``name`` on two ranks (both label sets)."""
    rows, width, classes, strategy = WORKLOADS[name]
    if strategy == "gram":
        return 2 * classes * width * width * 8  # the all-reduced Grams
    return 2 * (rows // 2) * width * 4 // 2  # half its rows go to the other rank's classes


def measure(name: str) -> dict:
    """One process against two ranks on ``name``: seconds, and the same components."""
    single, components = _probe(name, 0, 1)
    with tempfile.TemporaryDirectory() as folder:
        ranks = values(run_ranks(_rank, name, folder=folder, timeout=1800, group_timeout=900))
    assert all(parts == components for _, parts in ranks), "components differ"
    return {
        "workload": name,
        "one_process_s": single,
        "two_ranks_s": max(seconds for seconds, _ in ranks),
        "exchanged_bytes": exchanged_bytes(name),
    }


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_one_process_against_two_ranks(benchmark, name):
    record = benchmark.pedantic(measure, args=(name,), rounds=1, iterations=1)
    benchmark.extra_info.update(record)


if __name__ == "__main__":
    print(f"threads: one process {torch.get_num_threads()}, each rank 1")
    seconds = all_reduce_seconds()
    print(
        f"gloo all-reduce of 80 MiB float64 on two ranks: {seconds:.3f} s ({80 / seconds:.0f} MiB/s)"
    )
    print("| workload | one process (s) | two gloo ranks (s) | bytes a rank sends |")
    print("|---|---|---|---|")
    for workload in WORKLOADS:
        r = measure(workload)
        print(
            f"| {workload} | {r['one_process_s']:.2f} | {r['two_ranks_s']:.2f} | "
            f"{r['exchanged_bytes'] / 2**20:.0f} MiB |"
        )
