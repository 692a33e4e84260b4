"""masc_fast: the fast engine for the Minimum Angle Subspace Classifier (MASC).

For each layer and class k, MASC fits the leading eigenvectors ``U_k`` of ``X_kᵀ X_k`` that
explain 99 % of the class's (uncentred) variance and predicts ``argmax_k ‖U_kᵀ x‖² / ‖x‖²``,
the class whose subspace is at the smallest angle to ``x``.
"""

from masc_fast._version import __version__
from masc_fast.accumulator import EmptyClassWarning, GramAccumulator
from masc_fast.backends import BackendUnavailableError
from masc_fast.estimator import MASCClassifier
from masc_fast.probe import ProbeResult, probe
from masc_fast.subspace import ClassSubspaces

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
