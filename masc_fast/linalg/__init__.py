"""Eigensolvers for class Grams: exact, partial and batched, around one subspace-iteration core.

* :mod:`~masc_fast.linalg.spectra`: :class:`ClassEigen`, the paper's component rule, exact eigh;
* :mod:`~masc_fast.linalg.subspace_iteration`: the one loop (block subspace iteration with
  Rayleigh–Ritz) and its stop rule, over any operator;
* :mod:`~masc_fast.linalg.eigensolvers`: one class, exact or partial (:func:`class_eigh`);
* :mod:`~masc_fast.linalg.batched`: the partial solver over K classes at once (GPU).
"""

from masc_fast.linalg.batched import class_eigh_batched, partial_eigh_batched
from masc_fast.linalg.eigensolvers import class_eigh, partial_eigh
from masc_fast.linalg.spectra import ClassEigen, components_for_variance, exact_eigh
from masc_fast.linalg.subspace_iteration import subspace_iteration

__all__ = [
    "ClassEigen",
    "class_eigh",
    "class_eigh_batched",
    "components_for_variance",
    "exact_eigh",
    "partial_eigh",
    "partial_eigh_batched",
    "subspace_iteration",
]
