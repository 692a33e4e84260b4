"""Sweep of the C++ block sizes behind the defaults in masc_fast/backends/cpp_ops.py.

Scoring: rows per block (each worker's GEMM tile is rows × R) at the three scoring shapes of
bench_cpu_scoring.py. Gram: bucket rows × column-block width for one flush of the two Gram
shapes of bench_cpu_gram.py. Gram panels: one SYRK per column block against GEMM sub-panels of
16 / 32 / 64 columns (``cpp_ops.gram_panel_cols``) on 10 classes at d = 64 … 784, next to the
floor's per-class GEMMs over rows already grouped (``bench_floor.class_gram``); run it on one
thread (``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1``) to compare with bench_floor.py. Best of 3 per
cell (panels: of 10), in ms; prints Markdown tables.

Usage: python bench/sweep_cpu_blocks.py [scoring|gram|panels ...]   (default: all three)
"""

from __future__ import annotations

import sys
import time

import torch
from bench_floor import class_gram

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


def sweep_gram_panels() -> None:
    ext = cpp_ops._ext()
    panels = (0, 16, 32, 64)
    print(
        "\n| Gram panels, K=10 (n, d) | floor (grouped GEMMs) | "
        + " | ".join("SYRK" if p == 0 else f"{p}-col GEMMs" for p in panels)
        + " | default |"
    )
    print("|---|---|" + "---|" * len(panels) + "---|")
    for n, d in ((60000, 64), (60000, 128), (30000, 256), (20000, 512), (12000, 784)):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, d, generator=generator)
        y = torch.randint(0, 10, (n,), generator=generator)
        by_class = [x[y == label] for label in range(10)]
        gram = torch.zeros(10, d, d, dtype=torch.float64)
        bucket, width = cpp_ops.gram_blocks(10, d, 4, cpp_ops.default_threads())

        def flush(panel, gram=gram, x=x, y=y, bucket=bucket, width=width):
            with cpp_ops._single_threaded_blas():
                ext.gram_update(
                    gram.numpy(), x.numpy(), y.numpy(), bucket, width,
                    cpp_ops.default_threads(), panel,
                )  # fmt: skip

        floor = best_of(lambda by_class=by_class: [class_gram(rows) for rows in by_class], 10)
        cells = [best_of(lambda p=p: flush(p), 10) for p in panels]  # noqa: B023
        default = cpp_ops.gram_panel_cols(d)
        print(
            f"| {n}, {d} | {floor:.1f} | "
            + " | ".join(f"{c:.1f}" for c in cells)
            + f" | {'SYRK' if default == 0 else default} |"
        )


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["scoring", "gram", "panels"]
    sweeps = {"scoring": sweep_scoring, "gram": sweep_gram, "panels": sweep_gram_panels}
    for name in chosen:
        sweeps[name]()
