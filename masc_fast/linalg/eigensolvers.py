"""Leading eigenpairs of one class Gram matrix, enough for the paper's variance rule.

Two solvers (the partial one also batched over classes), one contract: return the leading
eigenvalues (descending) and eigenvectors of a symmetric positive semi-definite
``G = X_kᵀ X_k``, enough of them to satisfy the variance rule
(:func:`masc_fast.linalg.spectra.components_for_variance`).

* ``exact``: ``torch.linalg.eigh`` on the whole matrix, O(d³): 0.1 s at d=784, 0.25 s at
  d=1024, 11 s at d=4096 on the 2-core dev machine. Used up to d = 256, and as the fallback.
* ``partial``: randomized block subspace iteration with Rayleigh–Ritz
  (:func:`masc_fast.linalg.subspace_iteration.subspace_iteration` on the dense Gram). The trace of ``G`` is
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

import torch

from masc_fast.linalg.mixed_eigh import certified_class_eigen
from masc_fast.linalg.spectra import (
    ClassEigen,
    components_for_variance,
    exact_class_eigen,
    exact_class_eigens,
)
from masc_fast.linalg.subspace_iteration import (
    MAX_BLOCK_FRACTION,
    DenseGram,
    RitzRule,
    Step,
    initial_block,
    subspace_iteration,
)

__all__ = [
    "MAX_ITERATIONS",
    "METHODS",
    "all_exact",
    "batches_exact",
    "check_method",
    "class_eigh",
    "class_eighs",
    "partial_eigh",
    "uses_partial",
]

logger = logging.getLogger(__name__)

#: Eigensolver names: "auto" (exact to d = 256, partial above), "exact" (float64 eigh),
#: "partial" (subspace iteration), "fp32" (eigh in float32 with counts certified against float64;
#: opt-in: its eigenvectors move about 0.1 % of the predictions on real data, see
#: :mod:`masc_fast.linalg.mixed_eigh`).
METHODS = ("auto", "exact", "partial", "fp32")
# Below this width the exact solver is fast enough that the partial one is never worth it.
# At d=784 with r_k ~ 20 the partial solver fits 10 classes in 0.12 s against 1.0 s exact
# (bench/RESULTS.md); where r_k is large it gives up after a few cheap iterations.
_EXACT_MAX_DIM = 256
_EXACT_BATCH_BYTES = 64 * 2**20  # Grams per batched exact solve (all_exact)
#: Rayleigh–Ritz steps before the partial solvers give up (exact eigh runs instead).
MAX_ITERATIONS = 60


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
    :func:`~masc_fast.linalg.spectra.components_for_variance` on the returned values;
    ``rank_cap`` is the numerical rank when the block reached past it, else the given bound.
    """
    gram = gram.to(torch.float64)
    dim = gram.shape[0]
    block = initial_block(dim, variance, rank_cap)
    if block is None:
        return None
    found = []
    rule = RitzRule(dim, variance, tol)

    def decide(values, vectors, residuals, block):
        verdict = rule.verdict(values, residuals, block=block, total=total, rank_cap=rank_cap)
        if verdict.converged:
            found.append((values[: verdict.keep], vectors[:, : verdict.keep], verdict.rank_cap))
        if verdict.converged or verdict.next_block == 0:  # done, or exact eigh is cheaper
            return None
        return Step(verdict.next_block)

    generator = torch.Generator(device=gram.device).manual_seed(seed)
    operator = DenseGram(gram, generator)
    if not subspace_iteration(operator, block, decide, max_steps=MAX_ITERATIONS):
        logger.info(
            "partial eigensolver did not converge in %d iterations; using exact eigh",
            MAX_ITERATIONS,
        )
    return found[0] if found else None


def check_method(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is an eigensolver name."""
    if method not in METHODS:
        raise ValueError(
            f"eigensolver method must be 'auto', 'exact', 'partial' or 'fp32', got {method!r}"
        )


def uses_partial(method: str, dim: int, rank_bound: int, total: float) -> bool:
    """The per-class rule: partial when asked, or on ``auto`` above d=256 (and never for 0)."""
    wanted = method == "partial" or (method == "auto" and dim > _EXACT_MAX_DIM and rank_bound > 0)
    return wanted and total > 0


def class_eigh(
    gram: torch.Tensor,
    *,
    variance: float,
    count: int,
    method: str = "auto",
    tol: float = 1e-7,
    thresholds: tuple[float, ...] = (),
) -> ClassEigen:
    """Eigenpairs of one class Gram, enough for ``variance``; ``count`` = rows seen.

    ``method``: ``"exact"``, ``"partial"`` or ``"auto"`` (exact up to d=256, else partial,
    which falls back to exact when the components needed exceed a quarter of d), or ``"fp32"``:
    eigh in float32 where the counts at ``variance`` and ``thresholds`` are certain, else in
    float64 (:func:`~masc_fast.linalg.mixed_eigh.certified_class_eigen`).
    """
    check_method(method)
    dim = gram.shape[0]
    total = float(torch.diagonal(gram).to(torch.float64).sum())
    rank_bound = min(count, dim)
    if uses_partial(method, dim, rank_bound, total):
        result = partial_eigh(gram, variance=variance, total=total, rank_cap=rank_bound, tol=tol)
        if result is not None:
            values, vectors, rank_cap = result
            return ClassEigen(values, vectors, total, rank_cap, "partial")
    if method == "fp32":
        return certified_class_eigen(
            gram, variance=variance, rank_bound=rank_bound, thresholds=thresholds
        )
    return exact_class_eigen(gram, variance=variance, rank_bound=rank_bound)


def batches_exact(method: str, dim: int) -> bool:
    """Whether every class of a ``dim``-wide layer goes to exact eigh ("exact", or "auto" up to
    d = 256, :func:`uses_partial`) and is narrow enough for a batched solve to pay: up to
    d = 256 the tensor ops around each eigh are a visible share of it; wider, eigh's O(d³)
    dwarfs them, and a stack of K d × d copies would only cost memory."""
    return method in ("exact", "auto") and dim <= _EXACT_MAX_DIM


def all_exact(grams, *, variance: float, counts) -> list[ClassEigen | None]:
    """Every class with rows by exact eigh, solved in batches of at most 64 MiB of Grams
    (:func:`~masc_fast.linalg.spectra.exact_class_eigens`); ``None`` where ``counts[k] == 0``."""
    counts = [int(count) for count in counts]
    present = [label for label, count in enumerate(counts) if count]
    eigens: list[ClassEigen | None] = [None] * len(counts)
    if not present:
        return eigens
    dim = grams[0].shape[-1]
    per_batch = max(1, _EXACT_BATCH_BYTES // (8 * dim * dim))
    for start in range(0, len(present), per_batch):
        labels = present[start : start + per_batch]
        stack = torch.stack([grams[label] for label in labels])
        solved = exact_class_eigens(
            stack, variance=variance, rank_bounds=[min(counts[label], dim) for label in labels]
        )
        for label, eigen in zip(labels, solved):
            eigens[label] = eigen
    return eigens


def class_eighs(
    grams,
    *,
    variance: float,
    counts,
    method: str = "auto",
    tol: float = 1e-7,
    thresholds: tuple[float, ...] = (),
) -> list[ClassEigen | None]:
    """:func:`class_eigh` for the classes of one layer in turn (``None`` where
    ``counts[k] == 0``).

    On ``"auto"`` a class goes straight to exact eigh when the class before it kept more than
    the partial solver's give-up width (a quarter of d): the classes of one layer share the
    shape of their spectrum, and a partial attempt that gives up costs ~40 % of an exact eigh
    (Fashion-MNIST pixels, r_k = 214-380 of 784: 0.037 s against 0.087 s per class). A class
    keeping few components sends the next one back to the partial solver. Same components
    either way (the solvers agree within ``tol``). Narrow layers solved exactly (d <= 256,
    "exact" or "auto") go in batches (:func:`batches_exact`).
    """
    if len(grams) and batches_exact(method, grams[0].shape[-1]):
        return all_exact(grams, variance=variance, counts=counts)
    eigens: list[ClassEigen | None] = []
    follow_exact = False
    for gram, count in zip(grams, counts):
        if not count:
            eigens.append(None)
            continue
        chosen = "exact" if method == "auto" and follow_exact else method
        eigen = class_eigh(
            gram, variance=variance, count=count, method=chosen, tol=tol, thresholds=thresholds
        )
        keep = components_for_variance(eigen.values, eigen.total, variance, eigen.rank_cap)
        follow_exact = keep > MAX_BLOCK_FRACTION * gram.shape[-1]
        eigens.append(eigen)
    return eigens
