"""Adapter exposing ``masc_fast.reference`` through the backend interface.

Never auto-selected: it exists so benchmarks and tests can run the reference through the same
calls as the engine (``backend="reference"``).
"""

from __future__ import annotations

import numpy as np
import torch

from masc_fast import reference

__all__ = ["gram_update", "subspace_scores"]


def gram_update(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """Row-by-row float64 outer products (``reference.gram_update_ref``). Squares past
    float64's range are left Inf (or 0) without NumPy's warning: the accumulator's range
    check names the class, as for the other backends."""
    acc = gram.detach().cpu().numpy().astype(np.float64)
    with np.errstate(over="ignore", under="ignore"):
        reference.gram_update_ref(acc, x, y)
    gram.copy_(torch.from_numpy(acc))


def subspace_scores(x, basis, offsets, *, complement=None, block_rows=None, precision="fp32"):
    """NumPy float64 scores and predictions (``reference.subspace_scores_ref``).

    Always float64; ``precision`` must be "fp32" (full precision), as on the cpp backend.
    ``complement`` (K,) bool: classes whose columns hold the complement of their subspace.
    """
    if precision != "fp32":
        raise ValueError(
            f"reference backend: computes in float64; precision {precision!r} is a GPU mode"
        )
    basis_np = basis.detach().cpu().double().numpy()
    bounds = offsets.tolist()
    flags = [False] * (len(bounds) - 1) if complement is None else complement.tolist()
    bases = [
        basis_np[:, lo:hi] if hi > lo or flag else None
        for lo, hi, flag in zip(bounds[:-1], bounds[1:], flags)
    ]
    scores = reference.subspace_scores_ref(x, bases, flags)
    pred = reference.predict_ref(x, bases, flags)
    return (
        torch.from_numpy(scores).to(device=x.device, dtype=x.dtype),
        torch.from_numpy(pred).to(x.device),
    )
