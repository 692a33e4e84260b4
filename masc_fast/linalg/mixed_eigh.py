"""The full eigensolve in float32, redone in float64 only where a component count could differ.

``torch.linalg.eigh`` in float32 takes 0.55–0.6 of the float64 time at d = 784–2048 on the
2-core dev machine (bench/RESULTS.md). The paper's rule needs from the eigenvalues only the
component count r at each threshold t, and that count can change only where a cumulative
explained-variance ratio lies within the float32 error of t. So each class is solved in float32
and its counts are checked against a stated bound of that error; a class whose counts are not
certain is solved again by the float64 solver, whose result it then is (same LAPACK call, so
counts equal float64's even for ratios exactly at t).

Opt-in (``eigensolver="fp32"``), because the float32 eigenvectors are not float64's: near the
cut, where eigenvalues lie close together, they are rotated by up to ``u₃₂ λ₁ / gap``, and that
moves predictions at near-ties. On the real Fashion-MNIST input layer
(``masc-fast verify-reference --datasets fashion-mnist --eigensolver fp32``) every component
count of the authors' 25 settings is still exact, but 3 of the 25 accuracies at t = 0.99 move by
0.0001–0.0012 (up to 12 of 10,000 test points), so the default solvers stay float64.

The stated bound. With ``(Λ̂, V̂)`` the float32 eigenpairs and ``Ĝ = V̂ Λ̂ V̂ᵀ``, let ``ε =
‖G − Ĝ‖_F + ‖Λ̂^½ (V̂ᵀV̂ − I) Λ̂^½‖_F``: the backward error of the solve (rounding G to float32
included) plus what the vectors' loss of orthogonality moves. Both Frobenius norms are estimated
from 32 Gaussian probe vectors (``‖M‖_F² = E‖Mz‖²``; O(32 d²), about 2 % of the solve). The
error of every cumulative sum ``Ŝ_j = Σ_{i<=j} λ̂_i`` is taken to be at most ε. This is a
model, not a theorem: the rigorous bound (Hoffman–Wielandt) is √j · ε, which on real Grams is
~30× the errors seen and would certify nothing; the first-order error of ``Ŝ_j`` is
``trace(P_j (G − Ĝ))`` (``P_j`` the projector on the leading j vectors), which for a
backward-stable eigensolver stays a small part of ``‖G − Ĝ‖_F`` (``tests/test_mixed_eigh.py``
measures the ratio on real and random Grams and requires at most 1/2). A count r at t is
certain when ``(Ŝ_{r−1} + ε)/T <= t < (Ŝ_r − ε)/T`` (T = tr G, exact in float64) and r lies
below the eigenvalues that could be round-off (``λ̂ > 2ε + 4 λ̂₁ d u₆₄``), so the numerical
rank cannot cap it either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from masc_fast.linalg.spectra import (
    ClassEigen,
    components_for_variance,
    exact_class_eigen,
    scored_through_complement,
)

__all__ = [
    "MIXED_MIN_DIM",
    "certain_rank",
    "certified_class_eigen",
    "count_is_certain",
    "eigenvalue_error",
]

logger = logging.getLogger(__name__)

#: Widths from which the float32 solve runs first. Below, float64 eigh takes under a
#: millisecond or two and the probes would cost a visible share of it.
MIXED_MIN_DIM = 128
_PROBES = 32
_EPS64 = torch.finfo(torch.float64).eps


def eigenvalue_error(
    gram: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor, *, seed: int = 0
) -> float:
    """ε = ‖G − V̂Λ̂V̂ᵀ‖_F + ‖Λ̂^½(V̂ᵀV̂ − I)Λ̂^½‖_F, estimated from 32 probes (module notes).

    ``gram`` (d, d) float64; ``values`` (d,) and ``vectors`` (d, d), float64 copies of a
    lower-precision eigendecomposition of it.
    """
    generator = torch.Generator(device=gram.device).manual_seed(seed)
    probes = torch.randn(
        gram.shape[0], _PROBES, dtype=torch.float64, device=gram.device, generator=generator
    )
    residual = gram @ probes - vectors @ (values[:, None] * (vectors.T @ probes))
    root = values.clamp_min(0.0).sqrt()[:, None]
    drift = root * (vectors.T @ (vectors @ (root * probes))) - values[:, None] * probes
    estimate = (residual.square().sum() / _PROBES).sqrt() + (drift.square().sum() / _PROBES).sqrt()
    return float(estimate)


def count_is_certain(
    values: torch.Tensor, total: float, error: float, variance: float, rank_bound: int
) -> bool:
    """Whether every spectrum whose cumulative sums lie within ``error`` of those of ``values``
    gives the same count at ``variance`` (a count when >= 1).

    ``values`` (d,) descending, float64; ``total`` the exact trace; ``error`` the bound ε.
    """
    cap = certain_rank(values, error, rank_bound)
    if variance >= 1:
        return int(variance) <= cap or cap == rank_bound
    sums = torch.cumsum(values, 0)
    count = int((sums / total <= variance).sum()) + 1
    if count > cap:  # the rank could cap it: only float64 knows where
        return False
    margin = error + 1e-12 * total  # and the float64 sums' own rounding
    below = count == 1 or float(sums[count - 2]) + margin <= variance * total
    above = float(sums[count - 1]) - margin > variance * total
    return below and above


def certified_class_eigen(
    gram: torch.Tensor, *, variance: float, rank_bound: int, thresholds: Iterable[float] = ()
) -> ClassEigen:
    """:func:`~masc_fast.linalg.spectra.exact_class_eigen` from a float32 solve ("exact_fp32")
    where its component counts at ``variance`` and at every one of ``thresholds`` are certain;
    otherwise, and for narrow Grams (d < :data:`MIXED_MIN_DIM`) or Grams that do not fit
    float32, the float64 solver itself ("exact"), so counts are float64's either way.
    """
    dim = gram.shape[0]
    if dim >= MIXED_MIN_DIM and rank_bound > 0:
        eigen = _float32_class_eigen(gram.to(torch.float64), variance, rank_bound, thresholds)
        if eigen is not None:
            return eigen
    return exact_class_eigen(gram, variance=variance, rank_bound=rank_bound)


def _float32_class_eigen(
    gram: torch.Tensor, variance: float, rank_bound: int, thresholds: Iterable[float]
) -> ClassEigen | None:
    total = float(torch.diagonal(gram).sum())
    scale = float(torch.diagonal(gram).max())
    if not (0.0 < total < float("inf")):
        return None
    scaled = (gram / scale).to(torch.float32)
    if not bool(torch.isfinite(scaled).all()):
        return None
    try:
        values32, vectors32 = torch.linalg.eigh(scaled)
    except RuntimeError as failure:  # did not converge: float64 decides
        logger.info("float32 eigh failed (%s); solving in float64", failure)
        return None
    values = values32.to(torch.float64).flip(0).clamp_min_(0.0) * scale
    vectors = vectors32.to(torch.float64).flip(1)
    error = eigenvalue_error(gram, values, vectors)
    if not all(
        count_is_certain(values, total, error, threshold, rank_bound)
        for threshold in (variance, *thresholds)
    ):
        return None
    rank_cap = certain_rank(values, error, rank_bound)
    keep = components_for_variance(values, total, variance, rank_cap)
    kept = vectors if scored_through_complement(keep, gram.shape[0]) else vectors[:, :keep]
    return ClassEigen(values[:rank_cap], kept, total, rank_cap, "exact_fp32")


def certain_rank(values: torch.Tensor, error: float, rank_bound: int) -> int:
    """Eigenvalues certainly above float64's rank tolerance ``λ₁ · d · u₆₄`` (with margins for
    ε and float64's own round-off), at most ``rank_bound``: a lower bound of the rank float64
    finds (:func:`~masc_fast.linalg.spectra.numerical_rank`)."""
    noise = 2 * error + 4 * float(values[0]) * values.shape[0] * _EPS64
    return min(rank_bound, int((values > noise).sum()))
