"""MASC at many variance thresholds from one fit and one scoring pass (prefix sums).

A class's components are eigen-ordered (descending), so the basis kept at a threshold ``t`` is
the first ``r_k(t)`` columns of the basis kept at any larger threshold. The energy of ``x`` in
class k's subspace at ``t`` is therefore a prefix sum over the largest fit's components::

    ‖U_k[:, :r_k(t)]ᵀ x‖² = Σ_{j < r_k(t)} (u_jᵀ x)²

:func:`threshold_scores` projects each row block on the packed bases once (one GEMM for all
classes), squares, takes a float64 running sum over the columns and reads every class's energy
at every threshold as the difference of two entries of it, divided by ``‖x‖²``.
:class:`ThresholdScorer` wraps a fitted :class:`~masc_fast.ClassSubspaces` and its cut points.
Conventions are those of the ``subspace_scores`` op: scores clamped to 1, 0 for zero rows and
absent classes, argmax over present classes with the lowest index on ties.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from masc_fast._magnitude import rows_in_range
from masc_fast._validation import (
    as_tensor,
    check_activations,
    check_precision,
    check_variance,
    where,
)
from masc_fast.backends import PRECISIONS
from masc_fast.backends.torch_ops import precision_product
from masc_fast.probing.sweep_layout import sweep_layout
from masc_fast.scoring import compute_dtype
from masc_fast.subspace import ClassSubspaces

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ThresholdScorer",
    "ThresholdScores",
    "check_thresholds",
    "fit_variance",
    "threshold_scores",
]

#: The paper's thresholds; 1 = one component per class (the authors' "1 PC" / "1.0" setting).
DEFAULT_THRESHOLDS = (0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1)

# One block's temporaries (projection, its float64 squares and running sum, the per-threshold
# energies) are kept near this size, as the torch backend's scoring blocks are.
_BLOCK_BYTES = 32 * 2**20


def check_thresholds(thresholds: Iterable) -> tuple[float, ...]:
    """Validated thresholds, sorted ascending.

    Each must be a fraction in (0, 1) or a whole number >= 1 (that many components per class).

    Parameters
    ----------
    thresholds : iterable of numbers
        E.g. :data:`DEFAULT_THRESHOLDS`.

    Returns
    -------
    tuple of float
        Sorted ascending; ``1`` becomes ``1.0``.

    Raises
    ------
    TypeError
        ``thresholds`` is a bare number or string, or holds something that is not a number.
    ValueError
        It is empty, holds a value outside (0, 1) that is not a whole number >= 1, or holds a
        value twice.

    Example
    -------
    >>> check_thresholds([0.99, 1, 0.5])
    (0.5, 0.99, 1.0)
    """
    if isinstance(thresholds, (str, bytes, int, float, np.number)) or not isinstance(
        thresholds, Iterable
    ):
        raise TypeError(
            f"thresholds must be a sequence of numbers, got {type(thresholds).__name__} "
            f"{thresholds!r} (use variance= for a single threshold)"
        )
    values = [
        check_variance(value, f"thresholds[{index}]") for index, value in enumerate(thresholds)
    ]
    if not values:
        raise ValueError("thresholds is empty; give at least one threshold")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"thresholds hold {repeated} more than once; give each threshold once")
    return tuple(sorted(values))


def fit_variance(thresholds: Iterable) -> float:
    """The one threshold to fit at so that every threshold's components are a prefix of it.

    The largest fraction when there is one (its basis holds at least one component per
    present class, which covers the count 1), else the largest whole count.

    Example
    -------
    >>> fit_variance((0.5, 0.99, 1))
    0.99
    """
    values = check_thresholds(thresholds)
    fractions = [value for value in values if value < 1]
    return max(fractions) if fractions else max(values)


def _block_rows(components: int, cut_points: int, itemsize: int) -> int:
    """Rows per block: projection (x's dtype) + squares and running sum (float64) per
    component, energies and scores per (threshold, class)."""
    per_row = components * (itemsize + 16) + cut_points * (8 + itemsize)
    return max(1, min(65536, _BLOCK_BYTES // max(1, per_row)))


def threshold_scores(
    x: torch.Tensor,
    basis: torch.Tensor,
    offsets: torch.Tensor,
    cuts: torch.Tensor,
    *,
    complement: torch.Tensor | None = None,
    precision: str = "fp32",
    block_rows: int | None = None,
    return_scores: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """cos² scores and predictions of every row at every threshold, from one projection.

    ``score[t, i, k] = Σ_{j < cuts[t, k]} (basis[:, offsets[k] + j]ᵀ x_i)² / ‖x_i‖²``, or,
    where ``complement[t, k]``, ``1 − Σ_{j >= cuts[t, k]} (…)² / ‖x_i‖²`` (a suffix sum: the
    class's columns from ``cuts[t, k]`` on hold the complement of its subspace at t).

    Parameters
    ----------
    x : torch.Tensor, (n, d), float32 or float64, any device
        Validated rows (no NaN/Inf), the dtype they are scored in.
    basis : torch.Tensor, (d, R)
        Packed eigen-ordered bases ``[U_1 … U_K]``; moved to ``x``'s device and dtype.
    offsets : torch.Tensor, (K+1,), int64
        Class k owns columns ``offsets[k]:offsets[k+1]``.
    cuts : torch.Tensor, (T, K), int64
        Position in class k's columns where threshold t cuts; ``0 <= cuts[t, k] <=
        offsets[k+1] - offsets[k]``. 0 without the complement flag = the class is absent at t.
    complement : torch.Tensor, (T, K), bool, optional
        Read class k at threshold t through the suffix from its cut (see above); default none.
    precision : {"fp32", "tf32", "tf32x3", "bf16"}
        Products of the GEMM, as in the torch backend's ``subspace_scores`` (float64 ``x``
        takes "fp32" only).
    block_rows : int, optional
        Rows per block; default keeps a block's temporaries near 32 MiB.
    return_scores : bool, default True
        Also return the (T, n, K) scores; ``False`` returns ``None`` in their place and keeps
        memory at one block.

    Returns
    -------
    scores : torch.Tensor (T, n, K) in x's dtype, in [0, 1], or None
    pred : torch.Tensor (T, n), int64
        Per threshold the argmax over present classes (``cuts[t, k] > 0`` or the complement
        flag), lowest index on ties;
        -1 where no class is present.

    Raises
    ------
    ValueError
        Shapes that do not fit together, cuts outside a class's columns, or an unknown
        precision.

    Notes
    -----
    Work: one (n, d) × (d, R) GEMM plus O(n · (R + T·K)). The running sum is float64, so
    reading an energy as the difference of two of its entries loses at most about
    ``1e-16 · K · ‖x‖²``, far below the float32 products' error. Memory: one block.

    Example
    -------
    >>> basis = torch.linalg.qr(torch.randn(6, 4, dtype=torch.float64)).Q
    >>> offsets, cuts = torch.tensor([0, 2, 4]), torch.tensor([[1, 1], [2, 2]])
    >>> scores, pred = threshold_scores(torch.randn(5, 6, dtype=torch.float64), basis, offsets, cuts)
    >>> tuple(scores.shape), tuple(pred.shape)
    ((2, 5, 2), (2, 5))
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if x.dtype == torch.float64 and precision != "fp32":
        raise ValueError(f"float64 x is scored in float64; precision {precision!r} needs float32")
    num_classes = offsets.shape[0] - 1
    if x.ndim != 2 or basis.ndim != 2 or basis.shape[0] != x.shape[1]:
        raise ValueError(
            f"x (n, d) and basis (d, R) do not fit: shapes {tuple(x.shape)}, {tuple(basis.shape)}"
        )
    if cuts.ndim != 2 or cuts.shape[1] != num_classes or int(offsets[-1]) != basis.shape[1]:
        raise ValueError(
            f"cuts must be (T, {num_classes}) and offsets end at R={basis.shape[1]}; got cuts "
            f"{tuple(cuts.shape)}, offsets ending at {int(offsets[-1])}"
        )
    # Checked where offsets and cuts live (the CPU, from ClassSubspaces), before they move.
    widths = offsets[1:] - offsets[:-1]
    if bool(((cuts < 0) | (cuts > widths.to(cuts.device))).any()):
        raise ValueError(f"cuts {cuts.tolist()} exceed the classes' columns {widths.tolist()}")
    if complement is not None and complement.shape != cuts.shape:
        raise ValueError(
            f"complement must match cuts {tuple(cuts.shape)}, got {tuple(complement.shape)}"
        )
    device = x.device
    offsets, cuts = offsets.to(device=device, dtype=torch.int64), cuts.to(device, torch.int64)
    n, count = x.shape[0], cuts.shape[0]
    flipped = (
        torch.zeros_like(cuts, dtype=torch.bool)
        if complement is None
        else complement.to(device=device, dtype=torch.bool)
    )
    # Running-sum entries around the columns summed: a prefix [start, start + cut) of the
    # class's columns, or the suffix [start + cut, stop) where the class is read complemented.
    first, last = offsets[:-1].expand_as(cuts), offsets[1:].expand_as(cuts)
    starts = torch.where(flipped, first + cuts, first).flatten()
    stops = torch.where(flipped, last, first + cuts).flatten()
    absent = (cuts == 0) & ~flipped
    flipped = flipped.unsqueeze(0)  # (1, T, K) against a block's (rows, T, K) energies
    block_rows = block_rows or _block_rows(basis.shape[1], count * num_classes, x.element_size())
    product = precision_product(precision)
    basis = basis.to(device=device, dtype=x.dtype).contiguous()
    pred = torch.empty((count, n), dtype=torch.int64, device=device)
    scores = (
        torch.empty((count, n, num_classes), dtype=x.dtype, device=device)
        if return_scores
        else None
    )
    tiny = torch.finfo(torch.float64).tiny
    with torch.no_grad():
        for start in range(0, n, block_rows):
            # rows far from 1 scaled by a power of two (scores do not change): ‖x‖² of a
            # float32 row of 1e20 is Inf in float32, that of one of 1e-30 is 0
            block = rows_in_range(x[start : start + block_rows].contiguous())
            stop = start + block.shape[0]
            # ‖x‖² summed in float64, then rounded to x's dtype: what the backends divide by.
            sq_norms = block.double().square().sum(dim=1).to(x.dtype).double().unsqueeze(1)
            squares = product(block, basis).double().square_()
            running = torch.zeros(
                (block.shape[0], basis.shape[1] + 1), dtype=torch.float64, device=device
            )
            torch.cumsum(squares, dim=1, out=running[:, 1:])
            del squares
            energy = (running[:, stops] - running[:, starts]).view(-1, count, num_classes)
            del running
            ratio = energy / sq_norms.unsqueeze(2).clamp_min(tiny)
            ratio = torch.where(flipped, 1.0 - ratio, ratio)
            block_scores = torch.where(sq_norms.unsqueeze(2) > 0, ratio, 0.0)
            # argmax of the scores as returned (x's dtype), so ties resolve like the backends
            block_scores = block_scores.clamp_(0.0, 1.0).to(x.dtype)
            pred[:, start:stop] = block_scores.masked_fill(absent, -torch.inf).argmax(dim=2).T
            if scores is not None:
                scores[:, start:stop] = block_scores.permute(1, 0, 2)
    pred[absent.all(dim=1)] = -1  # no class can be predicted at that threshold
    return scores, pred


@dataclass(frozen=True)
class ThresholdScores:
    """``pred`` (T, n) int64, ``scores`` (T, n, K) or None, per threshold in ``thresholds``."""

    thresholds: tuple[float, ...]
    pred: torch.Tensor
    scores: torch.Tensor | None
    num_components: torch.Tensor  # (T, K) int64, r_k(t)


class ThresholdScorer:
    """One fitted :class:`~masc_fast.ClassSubspaces` scored at many thresholds at once.

    Parameters
    ----------
    subspaces : ClassSubspaces
        A fit at a threshold at least as large as every fraction in ``thresholds``, holding
        enough components for every whole count in it (e.g. fitted at
        :func:`fit_variance` ``(thresholds)``).
    thresholds : iterable of numbers
        Fractions in (0, 1) and/or whole counts >= 1 (:func:`check_thresholds`).

    Attributes
    ----------
    thresholds : tuple of float
        Sorted ascending.
    subspaces_at : dict
        ``{t: ClassSubspaces}``: the fit re-cut at each threshold
        (:meth:`ClassSubspaces.with_variance`; no refit), for component counts and captured
        variance.
    num_components : torch.Tensor (T, K), int64
        ``r_k(t)``.
    layout : SweepLayout
        The columns scored per class: a prefix of the eigenvectors for the small cuts and,
        where the fit holds all d, a suffix read as the complement for the large ones
        (:func:`~masc_fast.probing.sweep_layout.sweep_layout`).

    Raises
    ------
    ValueError
        A threshold needs more components than the fit computed (the message names the
        layer, the threshold and the fit's variance).

    Example
    -------
    >>> import torch, masc_fast
    >>> acc = masc_fast.GramAccumulator(num_classes=3, dim=8)
    >>> x, y = torch.randn(300, 8), torch.arange(300) % 3
    >>> acc.update(x, y)
    >>> scorer = ThresholdScorer(acc.fit(variance=0.9), (0.5, 0.9, 1))
    >>> scorer.score(x).pred.shape
    torch.Size([3, 300])
    """

    def __init__(self, subspaces: ClassSubspaces, thresholds: Iterable):
        self.subspaces = subspaces
        self.thresholds = check_thresholds(thresholds)
        self.subspaces_at = {t: self._cut(t) for t in self.thresholds}
        self.num_components = torch.stack(
            [self.subspaces_at[t].num_components for t in self.thresholds]
        )
        self.layout = sweep_layout(subspaces.eigenvectors, self.num_components, subspaces.dim)
        self._bases: dict[tuple, torch.Tensor] = {}

    def _cut(self, threshold: float) -> ClassSubspaces:
        fitted = self.subspaces
        if threshold == fitted.variance:
            return fitted
        try:
            return fitted.with_variance(threshold)
        except ValueError as error:
            raise ValueError(
                f"threshold {threshold:g} needs more components than the fit at variance "
                f"{fitted.variance:g} holds ({error}); fit at a threshold covering it, or probe "
                f"that count on its own"
            ) from error

    def score(
        self,
        x,
        *,
        batch: int | None = None,
        precision: str = "fp32",
        return_scores: bool = False,
        block_rows: int | None = None,
    ) -> ThresholdScores:
        """Validated predictions (and optionally scores) of rows ``x`` (n, d) at every threshold.

        Parameters
        ----------
        x : torch.Tensor or numpy.ndarray, (n, d), floating point
            Rows; float64 stays float64, anything else is scored in float32.
        batch : int, optional
            Named in error messages.
        precision : {"fp32", "tf32", "tf32x3", "bf16"}
            GEMM products (see :func:`threshold_scores`).
        return_scores : bool, default False
            Keep the (T, n, K) scores too.
        block_rows : int, optional
            Rows per block of :func:`threshold_scores`.

        Returns
        -------
        ThresholdScores

        Raises
        ------
        ValueError
            NaN/Inf rows or a wrong width (naming layer and batch), or a fit with no class.
        """
        fitted = self.subspaces
        check_precision(precision)
        x = check_activations(as_tensor(x, "x"), layer=fitted.layer, batch=batch, dim=fitted.dim)
        return self.score_validated(
            x, precision=precision, return_scores=return_scores, block_rows=block_rows
        )

    def score_validated(
        self,
        x: torch.Tensor,
        *,
        precision: str = "fp32",
        return_scores: bool = False,
        block_rows: int | None = None,
    ) -> ThresholdScores:
        """:meth:`score` of rows the caller has checked (the probe's passes check each batch
        once for every fit); raises only when the fit has no class."""
        fitted = self.subspaces
        if not bool(fitted.present.any()):
            raise ValueError(
                f"{where(fitted.layer)}no class has a subspace; nothing can be predicted"
            )
        x = x.to(compute_dtype(x))
        key = (x.dtype, str(x.device))
        if key not in self._bases:
            self._bases[key] = self.layout.basis.to(device=x.device, dtype=x.dtype)
        scores, pred = threshold_scores(
            x,
            self._bases[key],
            self.layout.offsets,
            self.layout.cuts,
            complement=self.layout.complement,
            precision=precision,
            block_rows=block_rows,
            return_scores=return_scores,
        )
        return ThresholdScores(self.thresholds, pred, scores, self.num_components)
