"""Which eigenvector columns a threshold sweep scores per class: a prefix and a suffix.

At threshold t class k keeps its ``r_k(t)`` leading eigenvectors. A sweep scores every t from
one projection (:func:`masc_fast.probing.threshold_scoring.threshold_scores`): the energy at a
small cut is a prefix sum over the leading columns ``V[:, :a]``; where the fit holds all d
eigenvectors, the energy at a large cut ``r ≥ b`` is cheaper as ``‖x‖² − Σ_{j ≥ r} (v_jᵀx)²``,
a suffix sum over the trailing columns ``V[:, b:]``. Per class the split between the two groups
of cuts is the one with the fewest columns, ``a + (d − b)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SweepLayout", "sweep_layout"]


@dataclass(frozen=True)
class SweepLayout:
    """Packed columns of a sweep and where each threshold reads each class.

    ``basis`` (d, R) float64 CPU: per class ``V[:, :a]`` then ``V[:, b:]``; ``offsets`` (K+1,)
    int64; ``cuts`` (T, K) positions within the class's columns and ``complement`` (T, K)
    bool, as :func:`~masc_fast.probing.threshold_scoring.threshold_scores` takes them.
    """

    basis: torch.Tensor
    offsets: torch.Tensor
    cuts: torch.Tensor
    complement: torch.Tensor


def _split(cuts: list[int], dim: int, full: bool) -> tuple[int, int]:
    """``(a, b)``: prefix columns ``[0, a)`` and suffix columns ``[b, dim)`` covering ``cuts``
    with the fewest columns; all prefix (``b = dim``) unless the fit holds all ``dim``."""
    ordered = sorted(set(cuts))
    best = (max(ordered), dim)
    if not full:
        return best
    for split in range(len(ordered)):
        prefix = ordered[split - 1] if split else 0
        suffix = ordered[split]
        if prefix + dim - suffix < best[0] + dim - best[1]:
            best = (prefix, suffix)
    return best


def sweep_layout(
    vectors: list[torch.Tensor | None], num_components: torch.Tensor, dim: int
) -> SweepLayout:
    """The cheapest prefix/suffix layout of every class for the cuts ``num_components``.

    ``vectors`` per class the eigenvectors the fit holds (d, m), descending, or None for an
    absent class; ``num_components`` (T, K) int64, ``r_k(t)``, each at most m.
    """
    blocks, widths = [], []
    cuts = torch.zeros_like(num_components)
    complement = torch.zeros(num_components.shape, dtype=torch.bool)
    for label, class_vectors in enumerate(vectors):
        column = num_components[:, label].tolist()
        if class_vectors is None or max(column) == 0:
            widths.append(0)
            continue
        prefix, suffix = _split(column, dim, class_vectors.shape[1] == dim)
        blocks += [class_vectors[:, :prefix], class_vectors[:, suffix:]]
        widths.append(prefix + dim - suffix)
        for row, cut in enumerate(column):
            flipped = cut > prefix
            cuts[row, label] = prefix + cut - suffix if flipped else cut
            complement[row, label] = flipped
    basis = (
        torch.cat([block.to(torch.float64) for block in blocks], dim=1)
        if blocks
        else torch.zeros((dim, 0), dtype=torch.float64)
    )
    offsets = torch.zeros(len(vectors) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(widths, dtype=torch.int64), 0)
    return SweepLayout(basis.contiguous(), offsets, cuts, complement)
