"""Triton kernels for masc_fast (installed as masc_fast.kernels).

Importing this package imports triton; only the adapter ``masc_fast.backends.triton_ops``
imports it, lazily, so ``import masc_fast`` never needs triton.
"""

from .projection_scores import projection_scores

__all__ = ["projection_scores"]
