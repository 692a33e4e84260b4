"""masc_fast: the fast engine for the Minimum Angle Subspace Classifier (MASC).

For each layer and class k, MASC fits the leading eigenvectors ``U_k`` of ``X_kᵀ X_k`` that
explain 99 % of the class's (uncentred) variance and predicts ``argmax_k ‖U_kᵀ x‖² / ‖x‖²``,
the class whose subspace is at the smallest angle to ``x``.
"""

from ._version import __version__
from .accumulator import EmptyClassWarning, GramAccumulator
from .backends import BackendUnavailableError
from .estimator import MASCClassifier
from .probe import ProbeResult, probe
from .subspace import ClassSubspaces

__all__ = [
    "__version__",
    "BackendUnavailableError",
    "ClassSubspaces",
    "EmptyClassWarning",
    "GramAccumulator",
    "MASCClassifier",
    "ProbeResult",
    "probe",
]
