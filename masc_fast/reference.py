"""Float64 NumPy / scikit-learn reference versions of every MASC op.

Plain and obviously right, and slow: this is what the engine is checked and benchmarked
against, never what it runs. It shares no code with the backends. Each op has the engine op's
name with a ``_ref`` suffix.

The class subspaces follow the authors' recipe (SPEC §5.2): stack the class's rows with their
negatives, fit ``sklearn.decomposition.PCA(n_components=t, svd_solver="full")`` (the mean of the
stacked data is zero, so this is the uncentred PCA of ``X_k``), and score a point by the angle
to each class subspace.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

__all__ = [
    "class_subspace_ref",
    "fit_subspaces_ref",
    "gram_update_ref",
    "subspace_scores_ref",
    "predict_ref",
    "angles_ref",
]


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _power_of_two_scaled(x: np.ndarray, axis: int | None) -> np.ndarray:
    """``x`` with each row (``axis=1``) or the whole array (``axis=None``) multiplied by the
    power of two that brings its largest |entry| into [0.5, 1): exact, and MASC's subspaces
    and scores do not change with it, so float64 squares neither overflow (rows of 1e300)
    nor vanish (rows of 1e-300). Zero rows stay zero."""
    if x.size == 0:
        return x
    peaks = np.abs(x).max(axis=axis, keepdims=axis is not None)
    _, exponents = np.frexp(peaks)
    return np.ldexp(x, -exponents)


def gram_update_ref(gram: np.ndarray, x, y) -> None:
    """Add ``x_iᵀ x_i`` of every row to ``gram[y_i]`` (in place), one row at a time."""
    x = _as_float64(x)
    y = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y).astype(np.int64)
    for row, label in zip(x, y):
        gram[label] += np.outer(row, row)


def class_subspace_ref(x_class, variance: float = 0.99) -> np.ndarray:
    """Orthonormal basis (d, r) of one class's subspace, the authors' way.

    ``variance < 1`` keeps the smallest number of components whose cumulative explained
    variance ratio exceeds it (scikit-learn's rule); ``variance >= 1`` keeps that many
    components, capped at the rank of the doubled data.
    """
    x_class = _power_of_two_scaled(_as_float64(x_class), axis=None)
    doubled = np.concatenate([x_class, -x_class], axis=0)
    if variance >= 1:
        n_components = int(min(int(variance), np.linalg.matrix_rank(doubled)))
    else:
        n_components = float(variance)
    pca = PCA(n_components=n_components, svd_solver="full")
    pca.fit(doubled)
    return pca.components_.T.copy()


def fit_subspaces_ref(x, y, num_classes: int, variance: float = 0.99) -> list[np.ndarray | None]:
    """One basis per class (``None`` for a class without training rows)."""
    x = _as_float64(x)
    y = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y).astype(np.int64)
    bases: list[np.ndarray | None] = []
    for label in range(num_classes):
        rows = x[y == label]
        bases.append(class_subspace_ref(rows, variance) if len(rows) else None)
    return bases


def subspace_scores_ref(
    x, bases: list[np.ndarray | None], complements: list[bool] | None = None
) -> np.ndarray:
    """cos² of the angle between each row and each class subspace, shape (n, K).

    A zero row scores 0 against every class; a missing class scores 0 for every row. Where
    ``complements[k]``, ``bases[k]`` holds the complement W_k of class k's subspace (an empty
    (d, 0) array for the whole space) and the score is ``1 − ‖W_kᵀx‖² / ‖x‖²``.
    """
    complements = complements or [False] * len(bases)
    x = _power_of_two_scaled(_as_float64(x), axis=1)
    sq_norms = np.einsum("nd,nd->n", x, x)
    scores = np.zeros((x.shape[0], len(bases)))
    for label, basis in enumerate(bases):
        if basis is None:
            continue
        energy = np.sum((x @ basis) ** 2, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = energy / sq_norms
            ratio = 1.0 - ratio if complements[label] else ratio
            scores[:, label] = np.where(sq_norms > 0, ratio, 0.0)
    return np.clip(scores, 0.0, 1.0)


def predict_ref(
    x, bases: list[np.ndarray | None], complements: list[bool] | None = None
) -> np.ndarray:
    """Class at the smallest angle (lowest index on exact ties; missing classes never win).

    -1 when no class has a basis. ``complements`` as in :func:`subspace_scores_ref`.
    """
    scores = subspace_scores_ref(x, bases, complements)
    missing = np.array([basis is None for basis in bases])
    if missing.all():
        return np.full(scores.shape[0], -1, dtype=np.int64)
    scores[:, missing] = -np.inf
    return np.argmax(scores, axis=1)


def angles_ref(x, bases: list[np.ndarray | None]) -> np.ndarray:
    """Angle in degrees between each row and each class subspace, shape (n, K)."""
    scores = subspace_scores_ref(x, bases)
    return np.degrees(np.arccos(np.sqrt(np.clip(scores, 0.0, 1.0))))
