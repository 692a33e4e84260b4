"""Keeping products of rows inside the floating-point range, by exact power-of-two scaling.

A float32 row of magnitude 1e19 has squares whose sums pass float32's largest value (3.4e38)
and one of magnitude 1e-30 has squares below its smallest normal one (1.2e-38): a Gram turns
Inf, or a class's Gram or a row's norm becomes 0. MASC itself does not care: the Gram of a class
is linear in its rows' squares (a scale s of all of them multiplies it by s², the same
eigenvectors and ratios) and a row's score ``‖Uᵀx‖² / ‖x‖²`` does not change with its scale. So
rows (or a class's rows) whose largest entry lies outside ``[2^low, 2^high]`` are multiplied by
``2^-e`` (e the exponent of that entry; exact, no rounding) before the products and, for Grams,
the product is multiplied back by ``2^2e`` in the float64 Gram. ``e`` is capped at the largest
power whose inverse is still a normal number of the dtype (±126 for float32): a subnormal row
(peak down to 2^-149) would otherwise be multiplied by 2^149, which float32 holds as Inf; capped,
it lands at 2^-23 or above, inside the range. The C++ Gram update does the
same per bucket (``csrc/gram_update.cpp``, ``ProductRange``: the same bounds).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "PRODUCT_RANGE",
    "largest_exact_shift",
    "out_of_range_exponents",
    "rows_in_range",
]

#: Exponents [low, high] of a largest |entry| whose products stay normal, per dtype: squares
#: summed over up to 1024 rows stay below the largest value, and far above the smallest normal.
PRODUCT_RANGE = {torch.float32: (-40, 50), torch.float64: (-400, 400)}


def out_of_range_exponents(peaks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """For largest-|entry| values ``peaks``, the exponent e (peak = m · 2^e, 1 <= m < 2)
    where it lies outside the dtype's :data:`PRODUCT_RANGE`, else 0 (also for a zero peak);
    capped at ±:func:`largest_exact_shift` so that ``2^e`` and ``2^-e`` are both normal."""
    low, high = PRODUCT_RANGE.get(dtype, PRODUCT_RANGE[torch.float32])
    _, exponents = torch.frexp(peaks)
    exponents = exponents.to(torch.int64) - 1  # ilogb: peak = m · 2^e with 1 <= m < 2
    outside = (peaks > 0) & ((exponents < low) | (exponents > high))
    cap = largest_exact_shift(dtype if dtype in PRODUCT_RANGE else torch.float32)
    return torch.where(outside, exponents.clamp(-cap, cap), torch.zeros_like(exponents))


def largest_exact_shift(dtype: torch.dtype) -> int:
    """The largest e with both ``2^e`` and ``2^-e`` normal numbers of ``dtype`` (126 for
    float32, 1022 for float64): the scale factors the dtype itself can hold."""
    info = torch.finfo(dtype)
    return min(int(math.log2(info.max)), -int(math.log2(info.tiny)))


def rows_in_range(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when every row's largest |entry| lies in the product range, else a copy
    whose rows outside it are scaled by a power of two to a largest entry near 1 (scores do not
    change with a row's scale). One reduction over ``x`` in the common case."""
    if x.numel() == 0:
        return x
    exponents = out_of_range_exponents(x.abs().amax(dim=1), x.dtype)
    if not bool(exponents.any()):
        return x
    return torch.ldexp(x, (-exponents).unsqueeze(1).to(x.dtype))
