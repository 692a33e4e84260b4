"""Every check of user input, with messages that name what is wrong and where.

Checks run once, at the public boundary, before any backend sees the data. Below this layer
ops assume validated, contiguous input. Streamed passes check each batch once through
:class:`BatchChecks`, which on CUDA keeps the verdicts on the device and reads them back
together instead of synchronising on every batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from masc_fast.backends import PRECISIONS

__all__ = [
    "BatchChecks",
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
    """A torch tensor from a tensor or NumPy array (no copy when possible). ``name`` is
    named in errors; "x" is rows, any other name labels (the hint on text differs)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "USV":
            kind = "an object" if value.dtype == object else f"a {value.dtype} (text or bytes)"
            hint = (
                "activations must be numbers"
                if name == "x"
                else "encode class labels as integers 0 … K−1 first (MASCClassifier accepts "
                "any labels)"
            )
            raise TypeError(f"{name} must be a numeric array, got {kind} array; {hint}")
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


def _check_activation_type(x: torch.Tensor, prefix: str, layer, batch, dim) -> None:
    """dtype and shape of an activation block (metadata only, no read of the rows)."""
    # Checked in the old order: not 2-D, then not float, then the wrong width.
    if x.ndim == 2 and not x.is_floating_point():
        raise TypeError(f"{prefix}activations must be floating point, got {x.dtype}")
    check_activation_shape(x.shape, layer=layer, batch=batch, dim=dim)


def _nonfinite(prefix: str, kind: str, bad_rows: int, n: int, first: int) -> ValueError:
    return ValueError(
        f"{prefix}activations contain {kind} values in {bad_rows} of {n} rows "
        f"(first bad row {first})"
    )


def check_activations(
    x: torch.Tensor,
    *,
    layer: str | None = None,
    batch: int | None = None,
    dim: int | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Check a (n, d) float activation block: shape, dtype and (``finite``) finiteness;
    returns it as is. ``finite=False``: the caller's own pass over the rows checks it."""
    prefix = where(layer, batch)
    _check_activation_type(x, prefix, layer, batch, dim)
    if not finite:
        return x
    # A sum is finite iff no NaN/Inf is in it, unless finite values overflow it; a sum is one
    # fast reduction, the elementwise mask (the exact test and the fallback) is 4x slower.
    if x.numel() and bool(torch.isfinite(x.sum())):
        return x
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad_rows = (~finite).any(dim=1).nonzero().flatten()
        kind = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise _nonfinite(prefix, kind, len(bad_rows), x.shape[0], int(bad_rows[0]))
    return x


def _check_label_type(y: torch.Tensor, prefix: str, name: str, n: int | None) -> None:
    """Shape and dtype of a label vector (metadata only, no read of the values)."""
    if y.ndim != 1:
        raise ValueError(f"{prefix}{name} must be 1-D, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{prefix}{name} must be integers, got {y.dtype}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{prefix}{name} have {y.shape[0]} entries but there are {n} rows")


def _label_out_of_range(prefix: str, name: str, low: int, high: int, num_classes: int):
    """The error for labels whose range [low, high] leaves [0, num_classes), else None."""
    if low >= 0 and high < num_classes:
        return None
    bad = low if low < 0 else high
    return ValueError(
        f"{prefix}{name} contain {bad}, outside [0, {num_classes}) (num_classes={num_classes})"
    )


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
    _check_label_type(y, prefix, name, n)
    if y.numel():
        error = _label_out_of_range(prefix, name, int(y.min()), int(y.max()), num_classes)
        if error is not None:
            raise error
    return y.to(torch.int64)


class BatchChecks:
    """The per-batch checks of a streamed pass: each layer's rows and each label set, once.

    Rows and labels on the CPU are checked at once (:func:`check_activations`,
    :func:`check_labels`). On CUDA reading a verdict is a host synchronisation, so only the
    metadata (shape, dtype) is checked at once; the device computes each data verdict (rows
    with NaN/Inf, the label range) into a few integers, and :meth:`raise_pending` reads all
    of them back in one transfer and raises the first failure, naming its layer and batch, with
    the message the immediate check gives. Callers read back before anything indexes with the
    labels (a Gram flush), before a checkpoint, and at the end of each pass; past
    ``max_pending`` verdicts the next check reads back by itself.

    Example
    -------
    >>> checks = BatchChecks()
    >>> x = checks.activations(torch.ones(4, 3), layer="fc1", batch=0, dim=3)
    >>> y = checks.labels(torch.tensor([0, 1, 2, 1]), 3, n=4, name="labels", batch=0)
    >>> checks.raise_pending()  # nothing deferred on the CPU
    """

    def __init__(self, *, defer: bool | None = None, max_pending: int = 1024):
        self.defer = defer
        self.max_pending = max_pending
        self._pending: list[tuple[str, tuple, torch.Tensor]] = []

    def _deferred(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s check waits for :meth:`raise_pending`: on CUDA by default;
        ``defer=True`` defers on every device (tests run the CUDA logic on the CPU with it)."""
        return tensor.device.type == "cuda" if self.defer is None else self.defer

    def activations(
        self, x: torch.Tensor, *, layer: str | None, batch: int | None, dim: int | None = None
    ) -> torch.Tensor:
        """Check a (n, d) activation block as :func:`check_activations`; returns it as is."""
        if not self._deferred(x):
            return check_activations(x, layer=layer, batch=batch, dim=dim)
        prefix = where(layer, batch)
        _check_activation_type(x, prefix, layer, batch, dim)
        if x.shape[0] and x.shape[1]:
            bad_rows = (~torch.isfinite(x)).any(dim=1)
            verdict = torch.stack(
                [
                    bad_rows.sum(),
                    bad_rows.to(torch.int64).argmax(),
                    torch.isnan(x).any().to(torch.int64),
                ]
            )
            self._defer("activations", (prefix, x.shape[0]), verdict)
        return x

    def labels(
        self,
        y: torch.Tensor,
        num_classes: int,
        *,
        n: int | None,
        name: str,
        batch: int | None,
        layer: str | None = None,
    ) -> torch.Tensor:
        """Check 1-D integer labels as :func:`check_labels`; returns them as int64."""
        if not self._deferred(y):
            return check_labels(y, num_classes, n=n, name=name, layer=layer, batch=batch)
        prefix = where(layer, batch)
        _check_label_type(y, prefix, name, n)
        if y.numel():
            self._defer("labels", (prefix, name, num_classes), torch.stack([y.min(), y.max()]))
        return y.to(torch.int64)

    def _defer(self, kind: str, context: tuple, verdict: torch.Tensor) -> None:
        self._pending.append((kind, context, verdict.to(torch.int64)))
        if len(self._pending) >= self.max_pending:
            self.raise_pending()

    def raise_pending(self) -> None:
        """Read back every deferred verdict (one transfer) and raise the first failure."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.cat([verdict for _, _, verdict in pending]).tolist()
        position = 0
        for kind, context, verdict in pending:
            found = values[position : position + verdict.numel()]
            position += verdict.numel()
            if kind == "activations":
                (prefix, rows), (bad_rows, first, has_nan) = context, found
                if bad_rows:
                    raise _nonfinite(prefix, "NaN" if has_nan else "inf", bad_rows, rows, first)
            else:
                (prefix, name, num_classes), (low, high) = context, found
                error = _label_out_of_range(prefix, name, low, high, num_classes)
                if error is not None:
                    raise error


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
