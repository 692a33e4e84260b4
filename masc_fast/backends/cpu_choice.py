"""Which CPU backend runs an op under ``backend="auto"``: cpp or torch, from measured medians.

The C++ kernels are not faster everywhere (tiny calls pay for thread start-up and the BLAS
pool switch), so ``auto`` on a CPU consults the medians below, measured in one run of
``bench/bench_cpu_scoring.py`` and ``bench/bench_cpu_gram.py`` (bench/RESULTS.md, "C++ CPU
kernels"), and picks the faster backend at the measured shape nearest (in log space) to the
call's. Without a shape, or when the extension is not built, the usual rule applies (cpp when
built).

Machine: AMD EPYC, 2 cores, torch 2.15 (MKL, 2 threads), SciPy's OpenBLAS 0.3.30.
"""

from __future__ import annotations

import math

__all__ = ["OPS", "cpu_winner"]

# op -> {shape: {backend: median seconds}}; shapes are (n, d, R) for subspace_scores and
# (K, d, rows) for gram_update (rows of one accumulator flush).
# Medians in seconds from the run recorded in bench/RESULTS.md ("C++ CPU kernels"); "torch" is
# the torch backend as shipped. cpp won at every measured shape on this machine, so ``auto``
# picks cpp here; another machine's table (same benches) can say otherwise.
_MEASURED: dict[str, dict[tuple[int, ...], dict[str, float]]] = {
    "subspace_scores": {
        (2000, 32, 40): {"cpp": 0.00027, "torch": 0.00217},
        (10000, 512, 2000): {"cpp": 0.1131, "torch": 0.5056},
        (10000, 4096, 5000): {"cpp": 2.121, "torch": 3.973},
        (20000, 4096, 10000): {"cpp": 8.973, "torch": 12.70},
    },
    "gram_update": {
        (4, 16, 4096): {"cpp": 0.00138, "torch": 0.00187},
        (10, 784, 10240): {"cpp": 0.3701, "torch": 1.0362},
        (200, 512, 131072): {"cpp": 0.5770, "torch": 0.8448},
    },
}
OPS = tuple(_MEASURED)


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return sum((math.log(max(1, p)) - math.log(max(1, q))) ** 2 for p, q in zip(a, b))


def cpu_winner(op: str, shape: tuple[int, ...]) -> str:
    """``"cpp"`` or ``"torch"``: the faster backend at the measured shape nearest to ``shape``.

    ``"cpp"`` for an op or shape with no measurements (the compiled path is the default).
    """
    if op not in _MEASURED:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    table = _MEASURED[op]
    if not table:
        return "cpp"
    nearest = min(table, key=lambda measured: _distance(measured, tuple(shape)))
    medians = table[nearest]
    return min(medians, key=medians.get)
