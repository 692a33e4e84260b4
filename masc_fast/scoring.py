"""Scoring rows against fitted class subspaces through the backend dispatcher.

Nothing here computes; it packs the bases, picks the backend and calls its
``subspace_scores`` op, which returns cos² per class and the predicted class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from masc_fast._validation import check_precision
from masc_fast.backends import PRECISIONS, get_backend, select_backend

__all__ = ["PRECISIONS", "ScoreResult", "score_rows", "scores_to_angles", "compute_dtype"]


@dataclass(frozen=True)
class ScoreResult:
    """``scores`` (n, K) cos² in [0, 1], ``pred`` (n,) int64, and the backend that ran."""

    scores: torch.Tensor
    pred: torch.Tensor
    backend: str


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is scored in float32 (energies sum in float64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def score_rows(
    x: torch.Tensor,
    basis: torch.Tensor,
    offsets: torch.Tensor,
    *,
    complement: torch.Tensor | None = None,
    backend: str | None = "auto",
    precision: str = "fp32",
) -> ScoreResult:
    """Scores and predictions of validated rows ``x`` (n, d) against packed bases (d, R);
    ``complement`` (K,) marks classes whose columns hold their subspace's complement."""
    check_precision(precision)
    shape = (x.shape[0], x.shape[1], basis.shape[1])
    name = select_backend(backend, x.device, op="subspace_scores", shape=shape)
    ops = get_backend(name)
    x = x.contiguous()
    basis = basis.to(device=x.device, dtype=x.dtype)
    scores, pred = ops.subspace_scores(
        x, basis, offsets, complement=complement, precision=precision
    )
    return ScoreResult(scores, pred, name)


def scores_to_angles(scores: torch.Tensor) -> torch.Tensor:
    """Angle in degrees from cos²: ``θ = arccos(√score)``."""
    return torch.rad2deg(torch.arccos(scores.clamp(0.0, 1.0).sqrt()))
