"""The partial eigensolver batched over classes: one launch serves every class.

``torch.linalg.eigh`` on a GPU is slow for large matrices and solves batches of matrices above
32×32 one at a time, so on CUDA :class:`~masc_fast.GramAccumulator` fits all classes together
here: the randomized block subspace iteration of :func:`masc_fast.linalg.eigensolvers.partial_eigh`
(the same :func:`~masc_fast.linalg.subspace_iteration.subspace_iteration` core, on a
:class:`~masc_fast.linalg.subspace_iteration.StackedGrams` operator), with batched GEMMs and a
batched QR on (K, d, b) blocks and one block width b for all classes.
Each class is judged by the same rule as the per-class solver and gives the same result (tested
to 1e-8 on projectors at ``tol=1e-10``); where it gives up, exact eigh runs for that class.
Not yet timed on a GPU.
"""

from __future__ import annotations

import logging

import torch

from masc_fast.linalg.eigensolvers import (
    MAX_ITERATIONS,
    all_exact,
    batches_exact,
    check_method,
    class_eigh,
    uses_partial,
)
from masc_fast.linalg.spectra import ClassEigen, exact_class_eigen
from masc_fast.linalg.subspace_iteration import (
    RitzRule,
    StackedGrams,
    Step,
    initial_block,
    subspace_iteration,
)

__all__ = ["class_eigh_batched", "partial_eigh_batched"]

logger = logging.getLogger(__name__)


def partial_eigh_batched(
    grams: torch.Tensor,
    *,
    variance: float,
    totals,
    rank_caps,
    tol: float = 1e-7,
    seed: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor, int] | None]:
    """:func:`partial_eigh` for K classes at once: batched GEMMs and QR, one block width.

    Every class runs the same randomized block subspace iteration with Rayleigh–Ritz as
    :func:`partial_eigh`, with the same stopping, growth and give-up rules, but the K blocks
    are one (K, d, b) tensor: ``G @ Q`` is one batched GEMM, the orthonormalisation one
    batched ``torch.linalg.qr``, the (b, b) Rayleigh–Ritz problems one batched ``eigh`` (on the
    host in float64 when the Grams are on CUDA and b > 32: PyTorch solves CUDA batches one
    matrix at a time past 32×32). The width b is common: each step it grows to the widest any
    unfinished class asks for, so other classes carry extra columns, which only makes their
    Ritz pairs more accurate.

    Parameters
    ----------
    grams : torch.Tensor, shape (K, d, d), float32 or float64, any device
        Symmetric positive semi-definite class Grams ``X_kᵀ X_k``; computed in float64.
    variance : float
        Threshold t in (0, 1), or a whole number of components (see
        :func:`components_for_variance`).
    totals : sequence of float, length K
        ``trace(G_k)``, the total variance of each class.
    rank_caps : sequence of int, length K
        Upper bound on each rank (``min(rows, d)``). A class with ``rank_caps[k] <= 0`` or
        ``totals[k] <= 0`` is skipped (``None``).
    tol : float, default 1e-7
        Kept Ritz pairs stop at residuals ``‖G v − θ v‖ <= tol · θ_1``.
    seed : int, default 0
        Seed of the random starting block (one generator for all classes).

    Returns
    -------
    list of (values, vectors, rank_cap) or None, length K
        Per class what :func:`partial_eigh` returns: ``values`` (r,) descending and ``vectors``
        (d, r), float64 on the Grams' device; ``None`` where the class was skipped or the
        solver gave up (it needs more than a quarter of d columns, or did not converge in 60
        steps): run exact eigh there.

    Notes
    -----
    Work per step ``O(A · d² · b)`` for A unfinished classes. Memory: the float64 Grams (a
    copy if given float32), plus a copy of the unfinished classes' Grams once at most half of
    them remain (so finished classes stop costing GEMMs) or when some classes are skipped, plus
    about four (A, d, b) blocks.

    Example
    -------
    >>> import torch
    >>> x = torch.randn(2, 50, 300, dtype=torch.float64)
    >>> grams = x.mT @ x
    >>> totals = grams.diagonal(dim1=1, dim2=2).sum(1).tolist()
    >>> out = partial_eigh_batched(grams, variance=0.9, totals=totals, rank_caps=[50, 50])
    >>> [vectors.shape[0] for _, vectors, _ in out]
    [300, 300]
    """
    count, dim = grams.shape[0], grams.shape[-1]
    totals = [float(total) for total in totals]
    rank_caps = [int(cap) for cap in rank_caps]
    results: list[tuple[torch.Tensor, torch.Tensor, int] | None] = [None] * count
    blocks = {
        label: initial_block(dim, variance, rank_caps[label])
        for label in range(count)
        if totals[label] > 0 and rank_caps[label] > 0
    }
    members = [label for label, block in blocks.items() if block is not None]
    if not members:
        return results
    device = grams.device
    grams = grams.to(torch.float64)
    working = grams if len(members) == count else grams[torch.tensor(members, device=device)]
    pending = set(members)
    rule = RitzRule(dim, variance, tol)

    def decide(values, vectors, residuals, block):
        # One transfer per step for the per-class decisions, whatever K is.
        host_values, host_residuals = values.cpu(), residuals.cpu()
        wanted = block
        for row, label in enumerate(members):
            if label not in pending:
                continue
            verdict = rule.verdict(
                host_values[row],
                host_residuals[row],
                block=block,
                total=totals[label],
                rank_cap=rank_caps[label],
            )
            if verdict.converged:
                keep = verdict.keep
                results[label] = (values[row, :keep], vectors[row, :, :keep], verdict.rank_cap)
            if verdict.converged or verdict.next_block == 0:
                pending.discard(label)
            else:
                wanted = max(wanted, verdict.next_block)
        if not pending:
            return None
        if len(pending) > len(members) // 2:
            return Step(wanted)
        # Few classes left: iterate on a copy of their Grams only.
        rows = [row for row, label in enumerate(members) if label in pending]
        members[:] = [members[row] for row in rows]
        return Step(wanted, rows)

    generator = torch.Generator(device=device).manual_seed(seed)
    operator = StackedGrams(working, generator)
    block = max(blocks[label] for label in members)
    if not subspace_iteration(operator, block, decide, max_steps=MAX_ITERATIONS):
        logger.info(
            "batched partial eigensolver: %d classes did not converge in %d iterations; using "
            "exact eigh for them",
            len(pending),
            MAX_ITERATIONS,
        )
    return results


def class_eigh_batched(
    grams: torch.Tensor,
    *,
    variance: float,
    counts,
    method: str = "auto",
    tol: float = 1e-7,
    thresholds: tuple[float, ...] = (),
) -> list[ClassEigen | None]:
    """:func:`class_eigh` for every class of a (K, d, d) stack, partial ones solved together.

    The classes :func:`class_eigh` would send to the partial solver (same rule, same ``method``)
    go through :func:`partial_eigh_batched` in one batch; each one it gives up on, and every
    other class, is solved by :func:`class_eigh` on its own (exact eigh). Classes with
    ``counts[k] == 0`` are skipped (``None``).

    Parameters
    ----------
    grams : torch.Tensor, shape (K, d, d), float32 or float64, any device
    variance : float
        Threshold t in (0, 1) or a whole number of components.
    counts : sequence of int, length K
        Rows seen per class (bounds each rank).
    method : {"auto", "exact", "partial", "fp32"}, default "auto"
    tol : float, default 1e-7
    thresholds : tuple of float
        Smaller thresholds whose counts ``method="fp32"`` must certify too.

    Returns
    -------
    list of ClassEigen or None, length K
    """
    check_method(method)
    if batches_exact(method, grams.shape[-1]):
        return all_exact(grams, variance=variance, counts=counts)
    dim = grams.shape[-1]
    counts = [int(count) for count in counts]
    totals = grams.diagonal(dim1=-2, dim2=-1).to(torch.float64).sum(-1).tolist()
    rank_bounds = [min(count, dim) for count in counts]
    batched = [
        count > 0 and uses_partial(method, dim, bound, total)
        for count, bound, total in zip(counts, rank_bounds, totals)
    ]
    solved = [None] * len(counts)
    if any(batched):
        caps = [bound if chosen else 0 for bound, chosen in zip(rank_bounds, batched)]
        solved = partial_eigh_batched(
            grams, variance=variance, totals=totals, rank_caps=caps, tol=tol
        )
    eigens: list[ClassEigen | None] = []
    for label, count in enumerate(counts):
        if count == 0:
            eigens.append(None)
        elif solved[label] is not None:
            values, vectors, rank_cap = solved[label]
            eigens.append(ClassEigen(values, vectors, totals[label], rank_cap, "partial"))
        elif batched[label]:  # the batched solver gave up on this class
            eigens.append(
                exact_class_eigen(grams[label], variance=variance, rank_bound=rank_bounds[label])
            )
        else:
            eigens.append(
                class_eigh(
                    grams[label],
                    variance=variance,
                    count=count,
                    method=method,
                    tol=tol,
                    thresholds=thresholds,
                )
            )
    return eigens
