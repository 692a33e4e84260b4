"""LDA and QDA baselines (SPEC §7.2): scikit-learn's estimators with their defaults.

The rows are copied to float64 NumPy arrays on the CPU and handed to scikit-learn unchanged,
so the behaviour, including the errors on singular covariances, is scikit-learn's own.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LDAProbe", "QDAProbe"]


def _check_fitted(probe, attribute: str) -> None:
    if not hasattr(probe, attribute):
        raise RuntimeError(f"{type(probe).__name__} is not fitted; call fit(x, y) first")


def _float64_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _int_numpy(y) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        return y.detach().cpu().numpy()
    return np.asarray(y)


class _SklearnProbe:
    """A scikit-learn estimator with its defaults, on float64 NumPy copies of the rows.

    Subclasses define ``_estimator()``, returning the unfitted estimator.

    Attributes
    ----------
    estimator_ : the fitted scikit-learn estimator
    classes_ : numpy.ndarray
    n_features_in_ : int
    """

    def fit(self, x, y):
        """Fit on ``x`` (tensor or array ``(n, D)``, copied to float64 on the CPU) and ``y``."""
        self.estimator_ = self._estimator().fit(_float64_numpy(x), _int_numpy(y))
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict(self, x) -> np.ndarray:
        """Labels (a NumPy array of ``classes_``' dtype) for ``x`` ``(n, D)``."""
        _check_fitted(self, "estimator_")
        return self.estimator_.predict(_float64_numpy(x))


class LDAProbe(_SklearnProbe):
    """``sklearn.discriminant_analysis.LinearDiscriminantAnalysis()`` with its defaults.

    SVD solver, no shrinkage, empirical priors (SPEC §7.2). The data are copied to float64
    on the CPU: memory ``8 n D`` bytes, time ``O(n D²)`` for the SVD.

    Example
    -------
    >>> x = np.random.default_rng(0).normal(size=(60, 3)); y = (x[:, 0] > 0).astype(int)
    >>> LDAProbe().fit(x, y).predict(x[:2]).shape
    (2,)
    """

    def _estimator(self):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        return LinearDiscriminantAnalysis()


class QDAProbe(_SklearnProbe):
    """``sklearn.discriminant_analysis.QuadraticDiscriminantAnalysis()`` with its defaults.

    ``reg_param=0`` (SPEC §7.2). scikit-learn raises ``LinAlgError`` when a class covariance
    is singular (for example a class with no more rows than features, or a dead ReLU unit);
    that error is passed on.

    Example
    -------
    >>> x = np.random.default_rng(0).normal(size=(60, 3)); y = (x[:, 0] > 0).astype(int)
    >>> QDAProbe().fit(x, y).predict(x[:2]).shape
    (2,)
    """

    def _estimator(self):
        from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

        return QuadraticDiscriminantAnalysis()
