"""One class's spectrum: the eigenpairs a solver returns, the paper's rule, exact eigh.

Every solver (:mod:`masc_fast.linalg.eigensolvers`, :mod:`masc_fast.linalg.batched`, the stored
fits of :mod:`masc_fast.probing.stored_fit`) returns a :class:`ClassEigen`, and every count of
kept components goes through :func:`components_for_variance`, so the 99 % rule lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ClassEigen",
    "components_for_variance",
    "exact_class_eigen",
    "exact_class_eigens",
    "exact_eigh",
    "numerical_rank",
    "scored_through_complement",
]


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


def numerical_rank(values: torch.Tensor, dim: int) -> int:
    """Eigenvalues above ``λ₁ · dim · eps(float64)`` (LAPACK's rank tolerance) in descending
    ``values`` of a ``dim``-wide Gram."""
    if values.numel() == 0 or values[0] <= 0:
        return 0
    threshold = values[0] * dim * torch.finfo(torch.float64).eps
    return int((values > threshold).sum())


def exact_eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenpairs of a symmetric matrix, descending; negative round-off clamped to 0."""
    values, vectors = torch.linalg.eigh(gram.to(torch.float64))
    return values.flip(0).clamp_min_(0.0), vectors.flip(1)


def scored_through_complement(keep: int, dim: int) -> bool:
    """Whether a class keeping ``keep`` of ``dim`` components is cheaper to score through the
    ``dim − keep`` it leaves out (more than half kept); its fit then holds all ``dim`` vectors."""
    return 2 * keep > dim


def exact_class_eigen(gram: torch.Tensor, *, variance: float, rank_bound: int) -> ClassEigen:
    """One class by full ``eigh``: values up to the numerical rank, vectors the rule keeps,
    or all d of them when it keeps more than half (the class is then scored through the
    d − r trailing ones, :attr:`masc_fast.ClassSubspaces.complement`)."""
    values, vectors = exact_eigh(gram)
    total = float(values.sum())
    rank_cap = min(rank_bound, numerical_rank(values, gram.shape[0]))
    keep = components_for_variance(values, total, variance, rank_cap)
    kept = vectors if scored_through_complement(keep, gram.shape[0]) else vectors[:, :keep]
    return ClassEigen(values[:rank_cap], kept, total, rank_cap, "exact")


def exact_class_eigens(
    grams: torch.Tensor, *, variance: float, rank_bounds: list[int]
) -> list[ClassEigen]:
    """:func:`exact_class_eigen` for each Gram of a (m, d, d) stack, from one batched ``eigh``
    and one vectorised pass over the spectra: the same eigenpairs, counts and vectors per
    class (LAPACK solves each matrix alone), without m rounds of small tensor ops, which on
    narrow layers (d = 128: ~1.3 ms per eigh) cost a visible share of the solve."""
    if grams.shape[0] == 0:
        return []
    dim = grams.shape[-1]
    values, ascending = torch.linalg.eigh(grams.to(torch.float64))
    values = values.flip(-1).clamp_min_(0.0)
    totals = values.sum(-1)
    ranks = (values > values[:, :1] * dim * torch.finfo(torch.float64).eps).sum(-1)
    ranks = torch.minimum(ranks, torch.tensor(rank_bounds, dtype=ranks.dtype, device=ranks.device))
    ranks = torch.where(values[:, 0] > 0, ranks, torch.zeros_like(ranks))
    if variance >= 1:
        keeps = torch.minimum(ranks, torch.full_like(ranks, int(variance)))
    else:
        ratios = torch.cumsum(values, -1) / totals[:, None]
        keeps = torch.minimum((ratios <= variance).sum(-1) + 1, ranks)
    keeps = torch.where(totals > 0, keeps, torch.zeros_like(keeps))
    eigens = []
    for index, (total, rank_cap, keep) in enumerate(
        zip(totals.tolist(), ranks.tolist(), keeps.tolist())
    ):
        # Only the columns kept are reversed (a copy): the trailing ones, or all d when the
        # class is scored through its complement.
        width = dim if scored_through_complement(keep, dim) else keep
        kept = ascending[index, :, dim - width :].flip(-1)
        eigens.append(ClassEigen(values[index, :rank_cap], kept, total, rank_cap, "exact"))
    return eigens
