"""Structured synthetic activations: classes near low-rank subspaces, plus noise.

Used by tests and benchmarks where real activations of the right size are not at hand. Each
class k lives near its own random subspace of dimension ``rank`` with a geometrically
decaying spectrum; isotropic Gaussian noise carries ``noise`` of the total energy.
"""

from __future__ import annotations

import torch

__all__ = ["structured_classes"]


def structured_classes(
    n: int,
    dim: int,
    num_classes: int,
    *,
    rank: int = 24,
    noise: float = 0.004,
    decay: float = 0.9,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rows (n, dim) and labels (n,) in ``[0, num_classes)``, balanced up to rounding.

    Row i of class k is ``U_k (s ⊙ z) + σ ε`` with ``U_k`` a random orthonormal (dim, rank)
    basis, ``s_j = decay^j``, ``z, ε`` standard normal, and σ set so that the noise is a fraction
    ``noise`` of the expected energy of a row.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    scales = decay ** torch.arange(rank, dtype=torch.float64)
    signal_energy = float((scales**2).sum())
    sigma = (noise / (1 - noise) * signal_energy / dim) ** 0.5
    rows = torch.empty((n, dim), dtype=dtype)
    for label in range(num_classes):
        index = (labels == label).nonzero().flatten()
        basis = torch.linalg.qr(torch.randn(dim, rank, generator=generator, dtype=torch.float64)).Q
        coefficients = (
            torch.randn(len(index), rank, generator=generator, dtype=torch.float64) * scales
        )
        noise_rows = sigma * torch.randn(len(index), dim, generator=generator, dtype=torch.float64)
        rows[index] = (coefficients @ basis.T + noise_rows).to(dtype)
    return rows, labels
