"""Structured synthetic activations: classes near low-rank subspaces, plus noise.

Used by tests and benchmarks where real activations of the right size are not at hand.
:func:`structured_classes`: each class k lives near its own random subspace of dimension
``rank`` with a geometrically decaying spectrum; isotropic Gaussian noise carries ``noise`` of
the total energy. :func:`classes_with_components`: each class's Gram has an exact spectrum,
built so that the variance rule keeps a chosen number of components.
"""

from __future__ import annotations

import torch

__all__ = ["classes_with_components", "component_spectrum", "structured_classes"]


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


def component_spectrum(dim: int, components: int, variance: float = 0.99) -> torch.Tensor:
    """Eigenvalues (dim,) descending, float64, whose variance rule keeps ``components``.

    The leading ``components`` values fall linearly from 1 to 1/2 and the rest are equal and
    smaller. Their sum S puts the cumulative ratio after ``components - 1`` values at or below
    ``variance`` and after ``components`` above it, S halfway along the interval that allows
    (so both ratios clear ``variance`` by ≥ 2e-4 at d = 1024, far beyond float32 rounding).
    """
    if not 0 < variance < 1:
        raise ValueError(f"variance must be in (0, 1), got {variance}")
    if not 1 <= components < dim:
        raise ValueError(f"components must be in [1, dim) = [1, {dim}), got {components}")
    top = torch.linspace(1.0, 0.5, components, dtype=torch.float64)
    kept, last = float(top.sum()), float(top[-1])
    # (kept - last) / S <= variance < kept / S, and S > kept (a positive tail).
    total = (max(kept, (kept - last) / variance) + kept / variance) / 2
    level = (total - kept) / (dim - components)
    if not 0 < level < last:
        raise ValueError(
            f"no spectrum keeps {components} of {dim} components at variance {variance}: the "
            f"tail would need eigenvalues of {level:.3g} against a last kept one of {last}"
        )
    return torch.cat([top, torch.full((dim - components,), level, dtype=torch.float64)])


def classes_with_components(
    n_per_class: int,
    dim: int,
    num_classes: int,
    components: int,
    *,
    n_test: int = 0,
    variance: float = 0.99,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training rows whose class Grams keep exactly ``components`` at ``variance``, and test rows.

    Class k has a random orthonormal basis ``Q_k`` (dim, dim) and the spectrum
    ``λ = component_spectrum(dim, components, variance)``. Its training rows are
    ``√n · W diag(√λ) Q_kᵀ`` with ``W`` (n, dim) orthonormal columns, so that
    ``X_kᵀ X_k = n · Q_k diag(λ) Q_kᵀ`` exactly (up to ``dtype``'s rounding) and the rule keeps
    ``components`` for every class; test rows are ``z diag(√λ) Q_kᵀ`` with ``z`` standard normal.

    Returns ``(x_train (K·n, dim), y_train, x_test (n_test, dim), y_test)``, rows in a random
    order, labels int64 balanced up to rounding. Needs ``n_per_class >= dim``.
    """
    if n_per_class < dim:
        raise ValueError(f"n_per_class ({n_per_class}) must be at least dim ({dim})")
    generator = torch.Generator().manual_seed(seed)
    scales = component_spectrum(dim, components, variance).sqrt()
    y_test = (torch.arange(n_test) % num_classes)[torch.randperm(n_test, generator=generator)]
    x_train = torch.empty((num_classes * n_per_class, dim), dtype=dtype)
    x_test = torch.empty((n_test, dim), dtype=dtype)
    for label in range(num_classes):
        basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64)).Q
        frame = torch.linalg.qr(
            torch.randn(n_per_class, dim, generator=generator, dtype=torch.float64)
        ).Q
        rows = slice(label * n_per_class, (label + 1) * n_per_class)
        x_train[rows] = ((n_per_class**0.5 * frame * scales) @ basis.T).to(dtype)
        index = (y_test == label).nonzero().flatten()
        z = torch.randn(len(index), dim, generator=generator, dtype=torch.float64)
        x_test[index] = ((z * scales) @ basis.T).to(dtype)
    y_train = torch.arange(num_classes).repeat_interleave(n_per_class)
    order = torch.randperm(len(y_train), generator=generator)
    return x_train[order], y_train[order], x_test, y_test
