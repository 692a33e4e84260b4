"""Where the GPU benchmarks run: CUDA, or Triton's interpreter on the CPU as a smoke check.

``MASC_FAST_BENCH_INTERPRET=1`` runs the GPU benchmarks' code on tiny shapes on the CPU (to
check the benchmarks, not to time anything); without it and without CUDA the caller skips.
Import this before anything imports triton: it sets ``TRITON_INTERPRET`` for the smoke run.
"""

from __future__ import annotations

import os

import torch

INTERPRET = os.environ.get("MASC_FAST_BENCH_INTERPRET") == "1"
if INTERPRET:
    os.environ.setdefault("TRITON_INTERPRET", "1")

SKIP_REASON = (
    None
    if INTERPRET or torch.cuda.is_available()
    else "no CUDA device: GPU benchmarks are not run, and not estimated"
)
DEVICE = torch.device("cuda" if torch.cuda.is_available() and not INTERPRET else "cpu")


def scoring_case(n: int, d: int, k: int, r: int, device, seed: int = 0):
    """Rows near K random r-dimensional class subspaces of R^d (plus noise), float32.

    Returns ``(x (n, d), basis (d, k·r) = [U_1 … U_K] orthonormal per class, offsets (k+1,))``,
    built on ``device`` in chunks so no (n, d, r) temporary passes 2 GiB.
    """
    import math

    generator = torch.Generator(device=device).manual_seed(seed)
    bases = torch.linalg.qr(torch.randn(k, d, r, device=device, generator=generator)).Q
    labels = torch.randint(0, k, (n,), device=device, generator=generator)
    coefficients = torch.randn(n, r, device=device, generator=generator)
    x = torch.empty(n, d, device=device)
    step = max(1, 2**29 // (d * r))
    for start in range(0, n, step):
        stop = min(n, start + step)
        x[start:stop] = torch.einsum(
            "ndr,nr->nd", bases[labels[start:stop]], coefficients[start:stop]
        )
    x += 0.5 * torch.randn(n, d, device=device, generator=generator) / math.sqrt(d / r)
    basis = bases.permute(1, 0, 2).reshape(d, k * r).contiguous()
    offsets = torch.arange(0, k * r + 1, r, dtype=torch.int64)
    return x, basis, offsets
