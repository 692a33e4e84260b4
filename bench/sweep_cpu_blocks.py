"""Sweep of the C++ block sizes behind the defaults in masc_fast/backends/cpp_ops.py.

Scoring: rows per block (each worker's GEMM tile is rows × R) at the three scoring shapes of
bench_cpu_scoring.py. Gram: bucket rows × column-block width for one flush of the two Gram
shapes of bench_cpu_gram.py. Best of 3 per cell, in ms; prints Markdown tables.

Usage: python bench/sweep_cpu_blocks.py
"""

from __future__ import annotations

import time

import torch

from masc_fast.backends import cpp_ops


def best_of(function, repeats: int = 3) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def sweep_scoring() -> None:
    blocks = (64, 128, 256, 512)
    print("| scoring (n, d, K, r) | " + " | ".join(f"{b} rows" for b in blocks) + " |")
    print("|---|" + "---|" * len(blocks))
    for n, d, k, r in ((10000, 512, 10, 200), (10000, 4096, 10, 500), (20000, 4096, 200, 50)):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, d, generator=generator)
        basis = torch.linalg.qr(torch.randn(d, min(d, k * r), generator=generator))[0]
        basis = torch.cat([basis] * (k * r // basis.shape[1] + 1), 1)[:, : k * r].contiguous()
        offsets = torch.arange(0, k * r + 1, r)
        cells = [
            best_of(lambda b=b: cpp_ops.subspace_scores(x, basis, offsets, block_rows=b))  # noqa: B023
            for b in blocks
        ]
        print(f"| {n}, {d}, {k}, {r} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")


def sweep_gram() -> None:
    ext = cpp_ops._ext()
    buckets, widths = (256, 512, 1024, 2048), (128, 256, 512, 784)
    for n, d, k in ((60000, 784, 10), (100000, 512, 200)):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, d, generator=generator)
        y = torch.randint(0, k, (n,), generator=generator)
        gram = torch.zeros(k, d, d, dtype=torch.float64)
        print(
            f"\n| Gram n={n}, d={d}, K={k}: bucket rows \\ column block | "
            + " | ".join(str(w) for w in widths)
            + " |"
        )
        print("|---|" + "---|" * len(widths))
        for bucket in buckets:
            cells = []
            for width in widths:

                def flush(bucket=bucket, width=width, gram=gram, x=x, y=y):
                    with cpp_ops._single_threaded_blas():
                        ext.gram_update(
                            gram.numpy(),
                            x.numpy(),
                            y.numpy(),
                            bucket,
                            width,
                            cpp_ops.default_threads(),
                        )

                cells.append(best_of(flush))
            print(f"| {bucket} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")


if __name__ == "__main__":
    sweep_scoring()
    sweep_gram()
