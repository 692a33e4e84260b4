"""Comparisons that explain themselves on failure (STYLE habits 9 and 10)."""

from __future__ import annotations

import numpy as np


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def assert_close_report(
    actual, expected, atol: float, rtol: float, name: str = "value", *, show: int = 5
) -> None:
    """Assert ``|actual − expected| <= atol + rtol·|expected|`` elementwise.

    On failure the message gives the shapes, how many entries fail, max and mean absolute error,
    NaN/Inf mismatches, and the ``show`` worst indices with both values.
    """
    actual = _numpy(actual).astype(np.float64)
    expected = _numpy(expected).astype(np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if actual.size == 0:
        return
    nan_mismatch = np.isnan(actual) != np.isnan(expected)
    inf_mismatch = np.isinf(actual) != np.isinf(expected)
    # NaN where NaN is expected, or the same infinity, is a match.
    same_special = (np.isnan(actual) & np.isnan(expected)) | (
        np.isinf(actual) & np.isinf(expected) & (actual == expected)
    )
    with np.errstate(invalid="ignore"):
        error = np.abs(actual - expected)
    error = np.where(same_special, 0.0, error)
    allowed = atol + rtol * np.abs(np.where(np.isfinite(expected), expected, 0.0))
    bad = ~(error <= allowed)  # NaN errors count as bad
    if not bad.any():
        return
    finite_error = np.where(np.isfinite(error), error, np.inf)
    flat = np.argsort(-np.nan_to_num(finite_error, nan=np.inf), axis=None, kind="stable")[:show]
    worst = "\n".join(
        f"    at {tuple(int(i) for i in np.unravel_index(index, error.shape))}: "
        f"actual={actual.flat[index]!r} expected={expected.flat[index]!r} "
        f"error={error.flat[index]:.3e} allowed={allowed.flat[index]:.3e}"
        for index in flat
    )
    finite = error[np.isfinite(error)]
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {error.size} entries differ beyond atol={atol:g}, "
        f"rtol={rtol:g}\n"
        f"  max abs error {np.max(finite_error):.3e}, mean abs error "
        f"{(finite.mean() if finite.size else float('nan')):.3e}\n"
        f"  NaN mismatches {int(nan_mismatch.sum())}, Inf mismatches {int(inf_mismatch.sum())}\n"
        f"  worst entries:\n{worst}"
    )


def top_two_gap(scores, present=None) -> np.ndarray:
    """Per row, the gap between the best and second-best score (``inf`` with one class)."""
    scores = _numpy(scores).astype(np.float64)
    if present is not None:
        scores = scores[:, _numpy(present).astype(bool)]
    if scores.shape[1] < 2:
        return np.full(scores.shape[0], np.inf)
    top = np.sort(scores, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def assert_labels_match(
    pred,
    ref_pred,
    ref_scores,
    score_tol: float,
    max_excused_fraction: float,
    *,
    present=None,
    name: str = "labels",
) -> int:
    """Labels equal the reference's except at near-ties (STYLE habit 10).

    A mismatch is excused when the reference's top-two score gap at that point is below
    ``score_tol``; fails on any other mismatch, or when the excused count exceeds
    ``max_excused_fraction`` of the points. Returns the number excused.
    """
    pred = _numpy(pred).astype(np.int64).ravel()
    ref_pred = _numpy(ref_pred).astype(np.int64).ravel()
    if pred.shape != ref_pred.shape:
        raise AssertionError(f"{name}: shape {pred.shape} != reference {ref_pred.shape}")
    gap = top_two_gap(ref_scores, present)
    mismatch = pred != ref_pred
    excused = mismatch & (gap < score_tol)
    unexcused = mismatch & ~excused
    if unexcused.any():
        index = np.flatnonzero(unexcused)[:10]
        raise AssertionError(
            f"{name}: {int(unexcused.sum())} of {pred.size} labels differ from the reference at "
            f"points that are not near-ties (gap >= {score_tol:g}); first indices {index.tolist()}, "
            f"got {pred[index].tolist()}, expected {ref_pred[index].tolist()}, "
            f"gaps {gap[index].tolist()}"
        )
    allowed = max_excused_fraction * pred.size
    if excused.sum() > allowed:
        raise AssertionError(
            f"{name}: {int(excused.sum())} near-tie mismatches excused, more than "
            f"{max_excused_fraction:g} of {pred.size} points ({allowed:g})"
        )
    if excused.any():
        print(f"{name}: excused {int(excused.sum())} near-tie mismatches of {pred.size} points")
    return int(excused.sum())
