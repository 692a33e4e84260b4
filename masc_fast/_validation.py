"""Every check of user input, with messages that name what is wrong and where.

Checks run once, at the public boundary, before any backend sees the data. Below this layer
ops assume validated, contiguous input.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from masc_fast.backends import PRECISIONS

__all__ = [
    "as_tensor",
    "check_activations",
    "check_labels",
    "check_variance",
    "where",
]


def where(layer: str | None = None, batch: int | None = None) -> str:
    """Message prefix naming the layer and batch, e.g. ``"layer 'fc1', batch 3: "``."""
    parts = []
    if layer is not None:
        parts.append(f"layer {layer!r}")
    if batch is not None:
        parts.append(f"batch {batch}")
    return ", ".join(parts) + ": " if parts else ""


def as_tensor(value, name: str, *, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch tensor from a tensor or NumPy array (no copy when possible)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got an object array")
        value = np.ascontiguousarray(value)
        if not value.flags.writeable:  # torch cannot wrap read-only memory safely
            value = value.copy()
        tensor = torch.from_numpy(value)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}"
        )
    return tensor if device is None else tensor.to(device)


def check_activation_shape(
    shape,
    *,
    layer: str | None = None,
    batch: int | None = None,
    dim: int | None = None,
) -> None:
    """Check that ``shape`` is (n, d) with d == ``dim``, reading no rows."""
    prefix = where(layer, batch)
    if len(shape) != 2:
        raise ValueError(f"{prefix}activations must be 2-D (n, d), got shape {tuple(shape)}")
    if dim is not None and shape[1] != dim:
        raise ValueError(
            f"{prefix}activations have {shape[1]} features, expected {dim} (shape {tuple(shape)})"
        )


def check_activations(
    x: torch.Tensor,
    *,
    layer: str | None = None,
    batch: int | None = None,
    dim: int | None = None,
) -> torch.Tensor:
    """Check a (n, d) float activation block: shape, dtype, finiteness; returns it as is."""
    prefix = where(layer, batch)
    # Checked in the old order: not 2-D, then not float, then the wrong width.
    if x.ndim == 2 and not x.is_floating_point():
        raise TypeError(f"{prefix}activations must be floating point, got {x.dtype}")
    check_activation_shape(x.shape, layer=layer, batch=batch, dim=dim)
    # A sum is finite iff no NaN/Inf is in it, unless finite values overflow it; a sum is one
    # fast reduction, the elementwise mask (the exact test and the fallback) is 4x slower.
    if x.numel() and bool(torch.isfinite(x.sum())):
        return x
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad_rows = (~finite).any(dim=1).nonzero().flatten()
        kind = "NaN" if bool(torch.isnan(x).any()) else "Inf"
        raise ValueError(
            f"{prefix}activations contain {kind} values in {len(bad_rows)} of {x.shape[0]} rows "
            f"(first bad row {int(bad_rows[0])})"
        )
    return x


def check_labels(
    y: torch.Tensor,
    num_classes: int,
    *,
    n: int | None = None,
    name: str = "labels",
    layer: str | None = None,
    batch: int | None = None,
) -> torch.Tensor:
    """Check 1-D integer labels in ``[0, num_classes)``; returns them as int64."""
    prefix = where(layer, batch)
    if y.ndim != 1:
        raise ValueError(f"{prefix}{name} must be 1-D, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{prefix}{name} must be integers, got {y.dtype}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{prefix}{name} have {y.shape[0]} entries but there are {n} rows")
    if y.numel():
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{prefix}{name} contain {bad}, outside [0, {num_classes}) "
                f"(num_classes={num_classes})"
            )
    return y.to(torch.int64)


def check_precision(precision: str) -> str:
    """A scoring precision mode (``masc_fast.backends.PRECISIONS``); returns it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def check_variance(variance: float, name: str = "variance") -> float:
    """A threshold in (0, 1), or a whole number >= 1 meaning that many components per class.

    ``name`` is what the messages call the value (``thresholds[2]`` for one of a sweep's).
    """
    if isinstance(variance, bool) or not isinstance(variance, (int, float, np.number)):
        raise TypeError(f"{name} must be a number, got {type(variance).__name__}")
    variance = float(variance)
    if not math.isfinite(variance) or variance <= 0:
        raise ValueError(f"{name} must be > 0, got {variance}")
    if variance >= 1 and variance != int(variance):
        raise ValueError(
            f"{name} >= 1 means a number of components per class and must be whole, got {variance}"
        )
    return variance
