"""Class subspaces from stored rows: the Gram trick and randomized PCA.

When the (K, d, d) Grams do not fit the memory budget, the streaming pass keeps each class's
rows on disk (:class:`masc_fast.probing.activation_store.LayerShards`) and its exact energy
``‖X_k‖_F² = trace(X_kᵀ X_k)``, and a class is fitted afterwards in one of two ways:

* ``gram_trick`` (n_k <= d): eigendecompose the small ``X_k X_kᵀ`` (n_k × n_k, float32
  products summed in float64 over column chunks); its non-zero eigenvalues are those of
  ``X_kᵀ X_k`` and ``U = X_kᵀ V Λ^{-1/2}``. Exact up to float32 products.
* ``randomized`` (n_k > d, or ``X_k X_kᵀ`` too large): randomized block subspace iteration with
  Rayleigh–Ritz on the implicit operator ``v ↦ X_kᵀ (X_k v)``, each application one chunked pass
  over the stored rows: the range finder with oversampling, grown until the Ritz values hold
  more than t of the exact total, and power-iterated until the kept Ritz pairs have residuals
  ``<= tol · θ_1`` (or ``max_passes`` is reached; the result then carries what it captured).

Either way the variance rule counts against the exact streamed total, and the fraction each class
captures is ``ClassSubspaces.explained_variance``. Bases are float32 (the scoring precision).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

from masc_fast.linalg.spectra import (
    ClassEigen,
    components_for_variance,
    exact_eigh,
    numerical_rank,
)
from masc_fast.linalg.subspace_iteration import OVERSAMPLE, RitzRule, Step, subspace_iteration
from masc_fast.probing.activation_store import LayerShards

__all__ = [
    "STORED_METHODS",
    "GatheredRows",
    "ScaledRows",
    "StoredRows",
    "choose_stored_method",
    "fit_stored_class",
]

logger = logging.getLogger(__name__)

STORED_METHODS = ("gram_trick", "randomized")


def choose_stored_method(rows: int, dim: int, memory_budget: int) -> str:
    """``gram_trick`` when the class has no more rows than features and its n_k × n_k float64
    Gram (with its eigenvectors) fits a quarter of the budget, else ``randomized``."""
    if rows <= dim and 2 * 8 * rows * rows <= memory_budget // 4:
        return "gram_trick"
    return "randomized"


def _column_chunks(dim: int, rows: int, chunk_bytes: int) -> list[slice]:
    width = max(1, min(dim, chunk_bytes // max(1, 4 * rows)))
    return [slice(start, min(dim, start + width)) for start in range(0, dim, width)]


def _gram_trick(shards, label_set, label, rows, *, variance, total, chunk_bytes, device):
    columns = _column_chunks(shards.dim, rows, chunk_bytes)
    gram = torch.zeros(rows, rows, dtype=torch.float64, device=device)
    for part in columns:
        block = shards.read(label_set, label, columns=part, device=device)
        gram += (block @ block.T).to(torch.float64)
    values, vectors = exact_eigh(gram)
    del gram
    rank_cap = numerical_rank(values, max(rows, shards.dim))
    keep = components_for_variance(values, total, variance, rank_cap)
    scale = (vectors[:, :keep] / values[:keep].sqrt()).to(torch.float32)
    basis = torch.empty(shards.dim, keep, dtype=torch.float32, device=device)
    for part in columns:
        basis[part] = shards.read(label_set, label, columns=part, device=device).T @ scale
    return ClassEigen(values[:rank_cap], basis, total, rank_cap, "gram_trick")


class GatheredRows:
    """One class's rows held in memory, read like :class:`LayerShards` (``dim``, ``count``,
    ``read``): the rows a distributed probe's ranks sent to the class's owner for the Gram
    trick."""

    def __init__(self, rows: torch.Tensor, dim: int):
        self.rows, self.dim = rows.to(torch.float32), dim

    def count(self, label_set: str, label: int) -> int:
        return int(self.rows.shape[0])

    def read(self, label_set: str, label: int, *, columns=slice(None), device="cpu"):
        return self.rows[:, columns].to(device)


class ScaledRows:
    """A class's rows (``LayerShards`` or :class:`GatheredRows`) read times ``2^-shift``: exact,
    and a class's subspace does not change with a common scale, while its float32 products do
    leave float32's range for rows far from 1 (squares of 1e19 pass 3.4e38, those of 1e-30
    fall below 1.2e-38). See :mod:`masc_fast._magnitude`."""

    def __init__(self, rows, shift: int):
        self.rows, self.factor, self.dim = rows, 2.0**-shift, rows.dim

    def count(self, label_set: str, label: int) -> int:
        return self.rows.count(label_set, label)

    def read(self, label_set: str, label: int, *, columns=slice(None), device="cpu"):
        return self.rows.read(label_set, label, columns=columns, device=device) * self.factor

    def chunks(self, label_set: str, label: int, *, chunk_rows: int, device="cpu"):
        for chunk in self.rows.chunks(label_set, label, chunk_rows=chunk_rows, device=device):
            yield chunk * self.factor


class StoredRows:
    """The operator ``v ↦ X_kᵀ (X_k v)`` over a class's stored rows (float32 products, float64
    sums), for :func:`~masc_fast.linalg.subspace_iteration.subspace_iteration`; counts its
    passes over the rows. Random columns come from a CPU generator seeded by the class label.
    ``reduce``: sums each image over the ranks of a distributed probe (their rows together
    are the class)."""

    def __init__(
        self, shards: LayerShards, label_set: str, label: int, chunk_rows: int, device, reduce=None
    ):
        self.shards, self.label_set, self.label = shards, label_set, label
        self.chunk_rows, self.device, self.reduce = chunk_rows, device, reduce
        self.shape = (shards.dim, shards.dim)
        self.passes = 0
        self.generator = torch.Generator().manual_seed(label)

    def __matmul__(self, block: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        single = block.to(torch.float32)
        image = torch.zeros(block.shape, dtype=torch.float64, device=self.device)
        chunks = self.shards.chunks(
            self.label_set, self.label, chunk_rows=self.chunk_rows, device=self.device
        )
        for rows in chunks:
            image += (rows.T @ (rows @ single)).to(torch.float64)
        return image if self.reduce is None else self.reduce(image)

    def random_columns(self, count: int) -> torch.Tensor:
        dim = self.shape[0]
        return torch.randn(dim, count, generator=self.generator, dtype=torch.float64).to(
            self.device
        )


def _randomized(
    shards, label_set, label, rows, *, variance, total, chunk_bytes, tol, max_passes, device, reduce
):
    dim = shards.dim
    rank_bound = min(rows, dim)
    chunk_rows = max(1, chunk_bytes // (4 * dim))
    operator = StoredRows(shards, label_set, label, chunk_rows, device, reduce=reduce)
    wanted = min(int(variance), rank_bound) if variance >= 1 else min(32, rank_bound)
    found = []
    # never give up (max_fraction 1): there is no exact solver to fall back to
    rule = RitzRule(dim, variance, tol, max_fraction=1.0)

    def decide(values, vectors, residuals, block):
        verdict = rule.verdict(values, residuals, block=block, total=total, rank_cap=rank_bound)
        if not (verdict.converged or operator.passes >= max_passes):
            return Step(verdict.next_block)
        if not verdict.converged:
            logger.info(
                "class %d: randomized PCA stopped after %d passes before its residuals "
                "reached tol=%g",
                label,
                operator.passes,
                tol,
            )
        keep = components_for_variance(values, total, variance, verdict.rank_cap)
        vectors = vectors[:, :keep].to(torch.float32)
        found.append(ClassEigen(values, vectors, total, verdict.rank_cap, "randomized"))
        return None

    # Each step applies the operator at least once, so the pass limit stops it first.
    block = min(dim, rank_bound + OVERSAMPLE, wanted + OVERSAMPLE)
    subspace_iteration(operator, block, decide, max_steps=max_passes)
    return found[0]


def fit_stored_class(
    shards: LayerShards,
    label_set: str,
    label: int,
    *,
    variance: float,
    total: float,
    method: str,
    chunk_bytes: int = 256 << 20,
    tol: float = 1e-5,
    max_passes: int = 40,
    device: torch.device | str = "cpu",
    rows: int | None = None,
    reduce=None,
    shift: int = 0,
) -> ClassEigen | None:
    """One class's eigenpairs from its stored rows, by ``method``; ``None`` when it has none.

    ``total`` is the class's exact energy from the streaming pass. ``chunk_bytes`` bounds the
    rows read at once; ``tol`` and ``max_passes`` bound the randomized iteration. The products
    and the eigensolve run on ``device``; so does the returned basis. In a distributed probe
    ``rows`` and ``total`` are the class's over all ranks and ``reduce`` sums the randomized
    operator's images over them (:class:`StoredRows`); ``shards`` then holds this rank's rows
    (for ``gram_trick``, all of them: the owner's gathered rows). ``shift``: the rows are read
    times ``2^-shift`` (:class:`ScaledRows`; the exponent of a class whose largest entry lies
    outside float32's product range, from
    :func:`~masc_fast._magnitude.out_of_range_exponents`); the eigenvalues and total returned
    are the unscaled rows'.
    """
    device = torch.device(device)
    if method not in STORED_METHODS:
        raise ValueError(f"stored method must be one of {STORED_METHODS}, got {method!r}")
    rows = shards.count(label_set, label) if rows is None else rows
    if rows == 0 or total <= 0:
        return None
    if shift:
        scaled = fit_stored_class(
            ScaledRows(shards, shift),
            label_set,
            label,
            variance=variance,
            total=math.ldexp(total, -2 * shift),
            method=method,
            chunk_bytes=chunk_bytes,
            tol=tol,
            max_passes=max_passes,
            device=device,
            rows=rows,
            reduce=reduce,
        )
        if scaled is None:
            return None
        values = torch.ldexp(scaled.values, torch.tensor(2.0 * shift, dtype=scaled.values.dtype))
        return dataclasses.replace(scaled, values=values, total=total)
    if method == "gram_trick":
        return _gram_trick(
            shards,
            label_set,
            label,
            rows,
            variance=variance,
            total=total,
            chunk_bytes=chunk_bytes,
            device=device,
        )
    return _randomized(
        shards,
        label_set,
        label,
        rows,
        variance=variance,
        total=total,
        chunk_bytes=chunk_bytes,
        tol=tol,
        max_passes=max_passes,
        device=device,
        reduce=reduce,
    )
