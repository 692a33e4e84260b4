"""Triton kernels for masc_fast (installed as masc_fast.kernels).

Importing this package imports triton; only the adapter ``masc_fast.backends.triton_ops``
imports it, lazily, so ``import masc_fast`` never needs triton.
"""

from ._utils import PRECISIONS, FusedBlocks
from .subspace_scores import subspace_scores

__all__ = ["PRECISIONS", "FusedBlocks", "subspace_scores"]
