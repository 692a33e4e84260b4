"""Randomized block subspace iteration with Rayleigh–Ritz: the one loop every partial solver runs.

The partial eigensolver of a dense Gram (:func:`masc_fast.linalg.eigensolvers.partial_eigh`),
its batched form over K classes (:mod:`masc_fast.linalg.batched`) and randomized PCA over rows
stored on disk (:mod:`masc_fast.probing.stored_fit`) differ only in the operator they apply and
in when they stop. :func:`subspace_iteration` is the loop; the operator and the stop rule are its
parameters:

* an **operator** is anything with ``operator @ block`` (the image ``G Q`` of a (d, b) block, or
  of a (K, d, b) stack), ``operator.random_columns(count)`` (fresh Gaussian columns shaped like a
  block) and, for stacks, ``operator.restrict(index)`` (the same operator on some members only).
  :class:`DenseGram` and :class:`StackedGrams` are the in-memory ones; the implicit
  ``v ↦ X_kᵀ(X_k v)`` over stored rows lives with the shards
  (:class:`masc_fast.probing.stored_fit.StoredRows`).
* a **stop rule** is a callable ``decide(values, vectors, residuals, block) -> Step | None`` seeing
  each Rayleigh–Ritz result; it keeps what it needs and answers ``None`` (finished) or the
  next :class:`Step`. :class:`RitzRule` is the per-class verdict all three solvers build it
  from: keep the components the variance rule asks for, grow the block until their Ritz values
  explain more than ``t`` of the exactly known total, and iterate until their residuals are
  below ``tol · θ₁``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from masc_fast.linalg.spectra import components_for_variance, numerical_rank

__all__ = [
    "MAX_BLOCK_FRACTION",
    "OVERSAMPLE",
    "DenseGram",
    "RitzRule",
    "StackedGrams",
    "Step",
    "Verdict",
    "initial_block",
    "orthonormal",
    "rayleigh_ritz",
    "subspace_iteration",
]

# Columns added beyond the components the rule needs; keeps the cut-off well separated from the
# block edge so the kept Ritz pairs converge in a few iterations.
OVERSAMPLE = 16
# Exact eigh is cheaper than the partial solver's growing blocks past this fraction of d.
MAX_BLOCK_FRACTION = 0.25
# torch.linalg.eigh on CUDA solves a batch in one call (cuSOLVER syevjBatched) only for matrices
# up to 32×32; larger ones are solved one matrix at a time (PyTorch's linalg_eigh_cusolver in
# aten/src/ATen/native/cuda/linalg/BatchLinearAlgebraLib.cpp), so past this width the batched
# solver's small Rayleigh–Ritz problems go to LAPACK on the host instead.
_DEVICE_EIGH_MAX = 32


def orthonormal(matrix: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the columns of ``matrix`` (d, b) or of each (K, d, b) member."""
    return torch.linalg.qr(matrix, mode="reduced").Q


def rayleigh_ritz(operator, basis: torch.Tensor, *, on_host: bool = False):
    """Rayleigh–Ritz of ``operator`` on ``basis``, single (d, b) or batched (K, d, b).

    Returns Ritz values (descending, clamped at 0), vectors, residual norms and
    ``operator @ basis``. ``on_host``: solve the small (b, b) problems with the host's LAPACK.
    """
    image = operator @ basis
    projected = basis.mT @ image
    projected = (projected + projected.mT) / 2
    if on_host:
        values, rotation = torch.linalg.eigh(projected.cpu())
        values, rotation = values.to(image.device), rotation.to(image.device)
    else:
        values, rotation = torch.linalg.eigh(projected)
    values, rotation = values.flip(-1), rotation.flip(-1)
    vectors = basis @ rotation
    residuals = torch.linalg.vector_norm(image @ rotation - vectors * values.unsqueeze(-2), dim=-2)
    return values.clamp_min(0.0), vectors, residuals, image


def initial_block(dim: int, variance: float, rank_cap: int) -> int | None:
    """First block width for one class, or ``None`` when exact eigh is cheaper from the start."""
    wanted = min(int(variance), rank_cap) if variance >= 1 else min(32, rank_cap)
    if rank_cap <= MAX_BLOCK_FRACTION * dim:
        # Few rows: one block spans the whole range of G and a single Rayleigh-Ritz is exact.
        block = min(dim, rank_cap + OVERSAMPLE)
    else:
        block = min(dim, wanted + OVERSAMPLE)
    if block > MAX_BLOCK_FRACTION * dim and block < rank_cap:
        return None
    return block


@dataclass(frozen=True)
class Verdict:
    """One class after a Rayleigh–Ritz step: converged (``keep`` pairs, ``rank_cap``), or the
    block width it needs next (its current width: iterate; more: grow; 0: give up)."""

    converged: bool
    keep: int
    rank_cap: int
    next_block: int


@dataclass(frozen=True)
class RitzRule:
    """When a class's Ritz pairs are done: the variance rule, the tolerance, when to give up.

    ``dim`` is d, ``variance`` the threshold t (or a whole count), ``tol`` the residual bound
    relative to θ₁, ``max_fraction`` the share of d past which the block gives up (exact eigh
    is cheaper; 1.0 never gives up).
    """

    dim: int
    variance: float
    tol: float
    max_fraction: float = MAX_BLOCK_FRACTION

    def verdict(self, values, residuals, *, block: int, total: float, rank_cap: int) -> Verdict:
        """Decide what one class needs, from its Ritz values and residuals on a ``block``.

        Keep the components the variance rule asks for; converged once they explain more than
        ``t`` of ``total`` (or are all there is) with room to spare in the block and residuals
        ``<= tol · θ₁``; otherwise grow the block (at least doubling it, and to
        :meth:`components_needed` plus the oversampling) or iterate.
        """
        dim, variance = self.dim, self.variance
        keep = components_for_variance(values, total, variance, rank_cap)
        captured = float(values[:keep].sum())
        enough = variance >= 1 or captured > variance * total or keep >= rank_cap
        spans_range = block >= rank_cap  # the block holds the whole range of G
        if enough and (spans_range or keep + OVERSAMPLE // 2 <= block):
            if bool((residuals[:keep] <= self.tol * values[0]).all()):
                known_rank = numerical_rank(values, dim)
                if known_rank < values.numel():  # the block reached past the rank of G
                    rank_cap = known_rank
                    keep = min(keep, known_rank)
                return Verdict(True, keep, rank_cap, block)
            return Verdict(False, keep, rank_cap, block)
        needed = max(keep, self.components_needed(values, total))
        grown = min(dim, rank_cap + OVERSAMPLE, max(2 * block, needed + OVERSAMPLE))
        if grown > self.max_fraction * dim and grown < rank_cap:
            return Verdict(False, keep, rank_cap, 0)
        return Verdict(False, keep, rank_cap, grown)

    def components_needed(self, values: torch.Tensor, total: float) -> int:
        """An estimate of how many components the variance rule needs, from one block's Ritz
        values: those still missing carry ``t · total − Σ θ`` and each is at most about the
        middle Ritz value ``θ_mid`` (eigenvalues past the block are at most ``λ_{b+1} <=
        λ_mid ≈ θ_mid``), so at least ``b + (t · total − Σ θ) / θ_mid`` are needed. On a flat
        spectrum it is close (keeping 90 % of d = 1024 it says ~860 at the first 48-column
        block), on a heavy-tailed one it is low (Fashion-MNIST pixels: ~90 of 200-380), so the
        block grows straight to it, or gives up at once when it is past ``max_fraction · d``.
        0 for a whole-number ``variance``."""
        block = values.numel()
        if self.variance >= 1 or block == 0:
            return 0
        middle = float(values[(block - 1) // 2])
        missing = self.variance * total - float(values.sum())
        if missing <= 0 or middle <= 0:
            return 0
        return block + min(self.dim, math.ceil(missing / middle))


class Step(NamedTuple):
    """What the next iteration runs on: ``width`` columns (more than now: fresh random columns
    are appended), and for a stack only the members at ``rows`` when given."""

    width: int
    rows: list[int] | None = None


class DenseGram:
    """The operator ``Q ↦ G Q`` of one dense symmetric (d, d) Gram, with its random stream."""

    def __init__(self, gram: torch.Tensor, generator: torch.Generator):
        self.gram, self.generator = gram, generator

    def __matmul__(self, block: torch.Tensor) -> torch.Tensor:
        return self.gram @ block

    def random_columns(self, count: int) -> torch.Tensor:
        gram = self.gram
        return torch.randn(
            gram.shape[-1], count, generator=self.generator, dtype=gram.dtype, device=gram.device
        )


class StackedGrams(DenseGram):
    """:class:`DenseGram` over a (K, d, d) stack: one batched GEMM per application."""

    def random_columns(self, count: int) -> torch.Tensor:
        gram = self.gram
        return torch.randn(
            gram.shape[0],
            gram.shape[-1],
            count,
            generator=self.generator,
            dtype=gram.dtype,
            device=gram.device,
        )

    def restrict(self, index: torch.Tensor) -> StackedGrams:
        """The members at ``index`` (a copy of their Grams, so finished ones stop costing)."""
        return StackedGrams(self.gram[index], self.generator)


Decide = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], "Step | None"]


def subspace_iteration(operator, block: int, decide: Decide, *, max_steps: int) -> bool:
    """Run block subspace iteration with Rayleigh–Ritz until ``decide`` says it is finished.

    Starts from ``Q = orth(operator @ Ω)`` with ``block`` random columns Ω, then each step: a
    Rayleigh–Ritz on ``Q``; ``decide(values, vectors, residuals, block)``; the next ``Q`` is the
    orthonormalised image ``G Q`` (one power step), restricted to ``Step.rows`` of a stack and
    widened with ``operator @ Ω'`` when ``Step.width`` grows. Batched problems on CUDA solve their
    small Rayleigh–Ritz eigenproblems on the host past 32 × 32 (cuSOLVER batches only up to
    that size).

    Parameters
    ----------
    operator
        ``operator @ block``, ``operator.random_columns(count)`` and, for stacks,
        ``operator.restrict(index)``; see the module docstring.
    block : int
        Width of the first block.
    decide : callable
        The stop rule: returns ``None`` once finished, else the next :class:`Step`.
    max_steps : int
        Rayleigh–Ritz steps at most.

    Returns
    -------
    bool
        ``True`` when ``decide`` finished, ``False`` when ``max_steps`` ran out first.
    """
    basis = orthonormal(operator @ operator.random_columns(block))
    for _ in range(max_steps):
        on_host = basis.ndim == 3 and basis.device.type == "cuda" and block > _DEVICE_EIGH_MAX
        values, vectors, residuals, image = rayleigh_ritz(operator, basis, on_host=on_host)
        step = decide(values, vectors, residuals, block)
        if step is None:
            return True
        if step.rows is not None:
            index = torch.tensor(step.rows, device=image.device)
            operator, image = operator.restrict(index), image[index]
        if step.width > block:
            image = torch.cat([image, operator @ operator.random_columns(step.width - block)], -1)
        basis = orthonormal(image)
        block = step.width
    return False
