"""Leading eigenpairs of a class Gram matrix, and the paper's component-count rule.

Two solvers (the partial one also batched over classes), one contract: return the leading
eigenvalues (descending) and eigenvectors of a symmetric positive semi-definite
``G = X_kᵀ X_k``, enough of them to satisfy the variance rule.

* ``exact``: ``torch.linalg.eigh`` on the whole matrix, O(d³): 0.1 s at d=784, 0.25 s at
  d=1024, 11 s at d=4096 on the 2-core dev machine. Used up to d = 256, and as the fallback.
* ``partial``: randomized block subspace iteration with Rayleigh–Ritz. The trace of ``G`` is
  the exact total variance, so the solver knows when the Ritz values it holds explain more than
  ``t`` of it; it grows the block until they do and iterates until the kept Ritz pairs have
  residuals ``‖G v − θ v‖ <= tol · θ_1``. Cost O(d² b) per iteration for a block of b columns.
  When the class has fewer rows than ``d`` (rank <= rows) the first block already spans the range
  of ``G`` (the Gram trick, without keeping the rows). If the block would exceed a quarter of
  ``d`` it gives up and the exact solver runs instead.
* batched: the partial iteration for K classes at once lives in
  :mod:`masc_fast.linalg.batched` (used on CUDA).

Because Ritz values never exceed the true eigenvalues, the partial solver's count can differ
from the exact one only where the exact cumulative ratio at the cut-off lies within about
``tol`` of ``t``; tests check equal counts and projectors within 1e-8 (at ``tol=1e-10``) or
1e-5 (default ``tol``) on random and real spectra.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

__all__ = [
    "ClassEigen",
    "class_eigh",
    "components_for_variance",
    "exact_eigh",
    "partial_eigh",
]

logger = logging.getLogger(__name__)

# Columns added beyond the components the rule needs; keeps the cut-off well separated from the
# block edge so the kept Ritz pairs converge in a few iterations.
_OVERSAMPLE = 16
# Exact eigh is cheaper than the partial solver's growing blocks past this fraction of d.
_MAX_BLOCK_FRACTION = 0.25
# Below this width the exact solver is fast enough that the partial one is never worth it.
# At d=784 with r_k ~ 20 the partial solver fits 10 classes in 0.12 s against 1.0 s exact
# (bench/RESULTS.md); where r_k is large it gives up after a few cheap iterations.
_EXACT_MAX_DIM = 256
_MAX_ITERATIONS = 60
# torch.linalg.eigh on CUDA solves a batch in one call (cuSOLVER syevjBatched) only for matrices
# up to 32×32; larger ones are solved one matrix at a time (PyTorch's linalg_eigh_cusolver in
# aten/src/ATen/native/cuda/linalg/BatchLinearAlgebraLib.cpp), so past this width the batched
# solver's small Rayleigh–Ritz problems go to LAPACK on the host instead.
_DEVICE_EIGH_MAX = 32


@dataclass(frozen=True)
class ClassEigen:
    """Leading eigenpairs of one class: ``values`` (m,) descending, ``vectors`` (d, m)."""

    values: torch.Tensor
    vectors: torch.Tensor
    total: float
    rank_cap: int
    method: str


def components_for_variance(
    values: torch.Tensor, total: float, variance: float, rank_cap: int
) -> int:
    """Number of leading components the paper keeps.

    ``variance < 1``: (number of cumulative explained-variance ratios <= t) + 1, the smallest
    count whose ratio exceeds t (scikit-learn's rule). ``variance >= 1``: that many components.
    Either way capped at ``rank_cap`` (the numerical rank). Returns 0 when ``total`` is 0.
    """
    if total <= 0 or rank_cap <= 0:
        return 0
    if variance >= 1:
        return min(int(variance), rank_cap)
    ratios = torch.cumsum(values.to(torch.float64), 0) / total
    return min(int((ratios <= variance).sum()) + 1, rank_cap)


def _numerical_rank(values: torch.Tensor, dim: int) -> int:
    if values.numel() == 0 or values[0] <= 0:
        return 0
    threshold = values[0] * dim * torch.finfo(torch.float64).eps
    return int((values > threshold).sum())


def exact_eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenpairs of a symmetric matrix, descending; negative round-off clamped to 0."""
    values, vectors = torch.linalg.eigh(gram.to(torch.float64))
    return values.flip(0).clamp_min_(0.0), vectors.flip(1)


def _orthonormal(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(matrix, mode="reduced").Q


def _ritz(gram: torch.Tensor, basis: torch.Tensor, *, on_host: bool = False):
    """Rayleigh–Ritz of ``gram`` on ``basis``, single (d, b) or batched (K, d, b).

    Returns Ritz values (descending, clamped at 0), vectors, residual norms and ``gram @ basis``.
    ``on_host``: solve the small (b, b) problems with the host's LAPACK (see _DEVICE_EIGH_MAX).
    """
    image = gram @ basis
    projected = basis.mT @ image
    projected = (projected + projected.mT) / 2
    if on_host:
        values, rotation = torch.linalg.eigh(projected.cpu())
        values, rotation = values.to(gram.device), rotation.to(gram.device)
    else:
        values, rotation = torch.linalg.eigh(projected)
    values, rotation = values.flip(-1), rotation.flip(-1)
    vectors = basis @ rotation
    residuals = torch.linalg.vector_norm(image @ rotation - vectors * values.unsqueeze(-2), dim=-2)
    return values.clamp_min(0.0), vectors, residuals, image


def _initial_block(dim: int, variance: float, rank_cap: int) -> int | None:
    """First block width for one class, or ``None`` when exact eigh is cheaper from the start."""
    wanted = min(int(variance), rank_cap) if variance >= 1 else min(32, rank_cap)
    if rank_cap <= _MAX_BLOCK_FRACTION * dim:
        # Few rows: one block spans the whole range of G and a single Rayleigh-Ritz is exact.
        block = min(dim, rank_cap + _OVERSAMPLE)
    else:
        block = min(dim, wanted + _OVERSAMPLE)
    if block > _MAX_BLOCK_FRACTION * dim and block < rank_cap:
        return None
    return block


@dataclass(frozen=True)
class _Verdict:
    """One class after a Rayleigh–Ritz step: converged (``keep`` pairs, ``rank_cap``), or the
    block width it needs next (its current width: iterate; more: grow; 0: give up)."""

    converged: bool
    keep: int
    rank_cap: int
    next_block: int


def _judge(
    values,
    residuals,
    *,
    block,
    dim,
    variance,
    total,
    rank_cap,
    tol,
    max_fraction=_MAX_BLOCK_FRACTION,
) -> _Verdict:
    """Decide what one class needs, from its Ritz values and residuals on a ``block``.

    ``max_fraction``: give up (exact eigh is cheaper) once the block would pass this share of d.
    """
    keep = components_for_variance(values, total, variance, rank_cap)
    captured = float(values[:keep].sum())
    enough = variance >= 1 or captured > variance * total or keep >= rank_cap
    spans_range = block >= rank_cap  # the block holds the whole range of G
    if enough and (spans_range or keep + _OVERSAMPLE // 2 <= block):
        if bool((residuals[:keep] <= tol * values[0]).all()):
            known_rank = _numerical_rank(values, dim)
            if known_rank < values.numel():  # the block reached past the rank of G
                rank_cap = known_rank
                keep = min(keep, known_rank)
            return _Verdict(True, keep, rank_cap, block)
        return _Verdict(False, keep, rank_cap, block)
    grown = min(dim, rank_cap + _OVERSAMPLE, max(2 * block, keep + _OVERSAMPLE))
    if grown > max_fraction * dim and grown < rank_cap:
        return _Verdict(False, keep, rank_cap, 0)
    return _Verdict(False, keep, rank_cap, grown)


def partial_eigh(
    gram: torch.Tensor,
    *,
    variance: float,
    total: float,
    rank_cap: int,
    tol: float = 1e-7,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Leading eigenpairs covering the variance rule, or ``None`` if exact eigh is cheaper.

    Returns ``(values, vectors, rank_cap)`` with ``r`` columns, ``r`` given by
    :func:`components_for_variance` on the returned values; ``rank_cap`` is the numerical rank
    when the block reached past it, else the given bound.
    """
    gram = gram.to(torch.float64)
    dim = gram.shape[0]
    block = _initial_block(dim, variance, rank_cap)
    if block is None:
        return None
    generator = torch.Generator(device=gram.device).manual_seed(seed)

    def random_columns(count: int) -> torch.Tensor:
        return torch.randn(dim, count, generator=generator, dtype=gram.dtype, device=gram.device)

    basis = _orthonormal(gram @ random_columns(block))
    for _ in range(_MAX_ITERATIONS):
        values, vectors, residuals, image = _ritz(gram, basis)
        verdict = _judge(
            values,
            residuals,
            block=block,
            dim=dim,
            variance=variance,
            total=total,
            rank_cap=rank_cap,
            tol=tol,
        )
        if verdict.converged:
            return values[: verdict.keep], vectors[:, : verdict.keep], verdict.rank_cap
        if verdict.next_block == 0:
            return None
        grown = verdict.next_block
        if grown > block:
            image = torch.cat([image, gram @ random_columns(grown - block)], dim=1)
        basis = _orthonormal(image)
        block = grown
    logger.info(
        "partial eigensolver did not converge in %d iterations; using exact eigh", _MAX_ITERATIONS
    )
    return None


def _check_method(method: str) -> None:
    if method not in ("auto", "exact", "partial"):
        raise ValueError(f"eigensolver method must be 'auto', 'exact' or 'partial', got {method!r}")


def _uses_partial(method: str, dim: int, rank_bound: int, total: float) -> bool:
    """The per-class rule: partial when asked, or on ``auto`` above d=256 (and never for 0)."""
    wanted = method == "partial" or (method == "auto" and dim > _EXACT_MAX_DIM and rank_bound > 0)
    return wanted and total > 0


def _exact_class(gram: torch.Tensor, *, variance: float, rank_bound: int) -> ClassEigen:
    values, vectors = exact_eigh(gram)
    total = float(values.sum())
    rank_cap = min(rank_bound, _numerical_rank(values, gram.shape[0]))
    keep = components_for_variance(values, total, variance, rank_cap)
    return ClassEigen(values[:rank_cap], vectors[:, :keep], total, rank_cap, "exact")


def class_eigh(
    gram: torch.Tensor,
    *,
    variance: float,
    count: int,
    method: str = "auto",
    tol: float = 1e-7,
) -> ClassEigen:
    """Eigenpairs of one class Gram, enough for ``variance``; ``count`` = rows seen.

    ``method``: ``"exact"``, ``"partial"`` or ``"auto"`` (exact up to d=256, else partial,
    which falls back to exact when the components needed exceed a quarter of d).
    """
    _check_method(method)
    dim = gram.shape[0]
    total = float(torch.diagonal(gram).to(torch.float64).sum())
    rank_bound = min(count, dim)
    if _uses_partial(method, dim, rank_bound, total):
        result = partial_eigh(gram, variance=variance, total=total, rank_cap=rank_bound, tol=tol)
        if result is not None:
            values, vectors, rank_cap = result
            return ClassEigen(values, vectors, total, rank_cap, "partial")
    return _exact_class(gram, variance=variance, rank_bound=rank_bound)
