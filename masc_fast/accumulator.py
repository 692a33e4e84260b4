"""Streaming per-class Gram accumulation: one pass over the data, any split of batches.

:class:`GramAccumulator` keeps ``G_k = Σ x xᵀ`` over the rows of class k for all classes at
once. Batches are staged until about ``1024 × K`` rows are waiting (or the staging memory cap
is reached) and then flushed with one sort by class and one GEMM per class, so a mixed batch of
256 rows does not turn into K tiny, bandwidth-bound updates. While a class has fewer rows than
features its rows are kept as well, and :meth:`GramAccumulator.fit` solves it by the Gram trick
(:func:`masc_fast.linalg.gram_trick.gram_trick_eigen`: an n_k × n_k eigh, not a d × d one).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch

from masc_fast._validation import as_tensor, check_activations, check_labels, check_variance, where
from masc_fast.backends import get_backend, select_backend
from masc_fast.linalg.batched import class_eigh_batched
from masc_fast.linalg.eigensolvers import class_eighs
from masc_fast.linalg.gram_trick import gram_trick_eigen
from masc_fast.linalg.spectra import ClassEigen
from masc_fast.subspace import ClassSubspaces

__all__ = ["EmptyClassWarning", "GramAccumulator"]

logger = logging.getLogger(__name__)

_ROWS_PER_CLASS = 1024
_STAGING_BYTES = 256 * 2**20


class EmptyClassWarning(UserWarning):
    """A class had no usable training rows and was left out of the fit."""


def warn_absent_class(
    layer: str | None, label: int, rows: int, *, stacklevel: int = 2, reason: str | None = None
) -> None:
    """Warn that class ``label`` is left out: no rows, only zero rows, or ``reason``."""
    if reason is None:
        reason = "has no training rows" if rows == 0 else f"has only all-zero rows ({rows})"
    warnings.warn(
        f"{where(layer)}class {label} {reason}; it is left out and can never be predicted",
        EmptyClassWarning,
        stacklevel=stacklevel + 1,
    )


def _smallest_full_precision(dtype: torch.dtype) -> float:
    """The smallest Gram entry with the dtype's full precision (its smallest normal value
    times 2^digits: ~1e-292 in float64); a class whose largest Gram entry is below it has lost
    its digits to underflow."""
    info = torch.finfo(dtype)
    return info.tiny / info.eps


def _range_fault(
    largest: torch.Tensor, rows_nonzero: torch.Tensor, dtype: torch.dtype
) -> tuple[int, str] | None:
    """The first class whose largest Gram entry (``largest``, (K,)) left ``dtype``'s range,
    and how: "overflowed" (not finite), else "underflowed" (below the dtype's full precision,
    then zero although ``rows_nonzero``); None when every class is in range."""
    over = ~torch.isfinite(largest)
    faint = (largest > 0) & (largest < _smallest_full_precision(dtype))
    vanished = (largest == 0) & rows_nonzero
    for mask, what in ((over, "overflowed"), (faint, "underflowed"), (vanished, "underflowed")):
        if bool(mask.any()):
            return int(mask.nonzero()[0]), what
    return None


class GramAccumulator:
    """Accumulates ``X_kᵀ X_k`` for every class k from streamed ``(x, y)`` batches.

    Parameters
    ----------
    num_classes : int
        K; labels must lie in ``[0, K)``.
    dim : int
        d, the number of features per row.
    device : torch.device or str, default "cpu"
        Where the (K, d, d) Gram tensor lives.
    dtype : torch.dtype, default torch.float64
        Accumulation dtype of the Gram matrices.
    product_dtype : torch.dtype, optional
        Dtype of each flush's ``X_kᵀ X_k`` product (over at most ~1024 staged rows per class)
        before it is added into the Gram. ``None`` (default) keeps the rows' own dtype: float32
        activations multiply in float32 (2.5× faster than float64 on the dev CPU; the sum across
        flushes stays in ``dtype``), float64 rows in float64. Pass ``torch.float64`` for float64
        products throughout.
    backend : str, default "auto"
        Which backend's ``gram_update`` runs (see :mod:`masc_fast.backends`).
    layer : str, optional
        Name used in error messages and warnings.
    keep_small_classes : bool, default True
        Keep each class's rows while it has fewer than d of them, and fit such a class by the
        Gram trick instead of eigendecomposing its d × d Gram (same components, float64).

    Notes
    -----
    Memory: ``K · d² · itemsize`` for the Grams plus at most 256 MiB of staged rows, plus the
    rows of classes with fewer than d rows (at most ``K · d²`` of the rows' dtype, half the
    float64 Grams for float32 rows; a class's rows are dropped when it reaches d).
    Work: ``N · d²`` multiply-adds in total, whatever the batch split.

    Example
    -------
    >>> import torch, masc_fast
    >>> acc = masc_fast.GramAccumulator(num_classes=2, dim=4)
    >>> acc.update(torch.randn(10, 4), torch.tensor([0, 1] * 5))
    >>> acc.fit().num_components.tolist()  # doctest: +SKIP
    [4, 4]
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        backend: str | None = "auto",
        layer: str | None = None,
        product_dtype: torch.dtype | None = None,
        keep_small_classes: bool = True,
    ):
        for name, value in (("num_classes", num_classes), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes} and {dim}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"accumulation dtype must be float32 or float64, got {dtype}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.device = torch.device(device)
        self.layer = layer
        self.product_dtype = product_dtype
        self._flush_rows = max(
            1, min(_ROWS_PER_CLASS * self.num_classes, _STAGING_BYTES // (4 * self.dim))
        )
        self.backend = select_backend(
            backend,
            self.device,
            op="gram_update",
            shape=(self.num_classes, self.dim, self._flush_rows),
        )
        self._ops = get_backend(self.backend)
        # The Grams of classes whose rows are kept (fewer than d) stay zero until they reach d
        # rows (their Gram is then built from the rows); :attr:`gram` adds them in on reading.
        self._gram = torch.zeros(
            (self.num_classes, self.dim, self.dim), dtype=dtype, device=self.device
        )
        self._counts = torch.zeros(self.num_classes, dtype=torch.int64)  # rows folded in
        # On CUDA, where the Grams are checked at fit() rather than per flush (no sync), each
        # class's largest |entry| folded in, kept on the device: tells a Gram that stayed zero
        # because its squares underflowed from one of zero rows, and names the magnitude.
        self._class_peaks = (
            torch.zeros(self.num_classes, dtype=torch.float64, device=self.device)
            if self.device.type == "cuda"
            else None
        )
        self.batches = 0
        self._staged: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._staged_rows = 0
        self._unchecked: tuple | None = None  # (x, y, batch, saved state): see update()
        # Per class its rows while it has fewer than d (None once it has d or more, or when off).
        self._small: list[list[torch.Tensor] | None] = [
            [] if keep_small_classes else None for _ in range(self.num_classes)
        ]
        #: Called before staged rows are folded in; the probe reads back its deferred batch
        #: checks there, so labels are known good before any op indexes with them.
        self.before_flush: Callable[[], None] | None = None

    @property
    def counts(self) -> torch.Tensor:
        """Rows seen per class, (K,) int64 on the CPU, staged rows included."""
        if not self._staged:
            return self._counts.clone()
        staged = torch.cat([labels for _, labels in self._staged]).cpu()
        return self._counts + torch.bincount(staged, minlength=self.num_classes)

    def update(self, x, y) -> None:
        """Add a batch: ``x`` (n, d) float tensor/array, ``y`` (n,) integer labels."""
        batch = self.batches
        x = as_tensor(x, "x")
        deferred = self._defers_finite_check(x)
        x = check_activations(x, layer=self.layer, batch=batch, dim=self.dim, finite=not deferred)
        y = check_labels(
            as_tensor(y, "y"), self.num_classes, n=x.shape[0], layer=self.layer, batch=batch
        )
        if deferred:
            self._unchecked = (x, y, batch, self._saved())
        self.add_checked(x, y)

    def _defers_finite_check(self, x: torch.Tensor) -> bool:
        """Whether the C++ Gram pass, which reads every entry anyway, can be this batch's
        finiteness check instead of a separate pass over its rows (2-3 % of a narrow layer's
        fit): a CPU batch that is flushed at once, on its own, into float64 Grams small enough
        (K·d² <= n·d / 8) to be saved first and put back if a NaN or Inf turns up."""
        return (
            self.backend == "cpp"
            and isinstance(x, torch.Tensor)
            and x.ndim == 2
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and self._gram.dtype == torch.float64
            and self.product_dtype is None
            and not self._staged
            and x.shape[0] >= self._flush_rows
            and 8 * self.num_classes * self.dim * self.dim <= x.numel()
        )

    def _saved(self) -> tuple:
        """What a flush changes, to put back when the deferred check fails."""
        small = [None if kept is None else list(kept) for kept in self._small]
        return self._gram.clone(), self._counts.clone(), small, self.batches

    def _restore(self, saved: tuple) -> None:
        gram, self._counts, self._small, self.batches = saved
        self._gram.copy_(gram)
        self._staged, self._staged_rows = [], 0

    def _check_deferred(self, unchecked: tuple, peak: float | None, diverted: bool) -> None:
        """After a deferred flush: when the Gram pass met a NaN or Inf, or rows of the batch
        went to kept small classes unread, check the batch the usual way, which names it, its
        rows and the kind of value; on failure the accumulator is first put back as it was
        before the batch (as if it had been checked up front)."""
        x, y, batch, saved = unchecked
        clean = peak is not None and peak == peak  # NaN != NaN
        if clean and not diverted:
            return
        try:
            check_activations(x, layer=self.layer, batch=batch, dim=self.dim)
        except ValueError:
            self._restore(saved)
            raise
        if not clean and peak is not None:  # finite after all: redo it the usual way
            self._restore(saved)
            self.add_checked(x, y)

    def add_checked(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Stage a batch whose rows and int64 labels the caller has checked.

        The path below :meth:`update`: the probe checks each batch once for all its label sets
        (:class:`masc_fast._validation.BatchChecks`) and feeds every accumulator through here,
        so nothing is checked twice and, on CUDA, nothing is read back per batch.
        """
        self.batches += 1
        if x.shape[0] == 0:
            return
        self._staged.append((x.to(self.device), y.to(self.device)))
        self._staged_rows += x.shape[0]
        if self._staged_rows >= self._flush_rows:
            self.flush()

    def flush(self) -> None:
        """Fold every staged row into the Gram matrices."""
        if not self._staged:
            return
        unchecked, self._unchecked = self._unchecked, None  # a batch update() deferred
        if self.before_flush is not None:
            self.before_flush()
        if len(self._staged) == 1:  # one big batch: no copy
            ((x, y),) = self._staged
        else:
            x = torch.cat([chunk for chunk, _ in self._staged])
            y = torch.cat([labels for _, labels in self._staged])
        self._staged, self._staged_rows = [], 0
        # One count per flush (a host read on CUDA), not one per batch.
        added = torch.bincount(y, minlength=self.num_classes).cpu()
        self._counts += added
        if self.product_dtype is not None or x.dtype not in (torch.float32, torch.float64):
            x = x.to(self.product_dtype or self._gram.dtype)
        small = [label for label, kept in enumerate(self._small) if kept is not None]
        diverted = unchecked is not None and any(
            int(self._counts[label]) < self.dim and int(added[label]) for label in small
        )
        if small:
            x, y = self._keep_small(x, y, added, small)
        peak = self._ops.gram_update(self._gram, x, y) if x.shape[0] else None
        if self._class_peaks is not None and x.shape[0]:
            rows_peak = x.abs().amax(dim=1).to(torch.float64)
            self._class_peaks.scatter_reduce_(0, y, rows_peak, reduce="amax")
        if unchecked is not None:
            self._check_deferred(unchecked, peak, diverted)
        if self._class_peaks is None:  # on CUDA fit() checks, without a sync per flush
            self._check_range(x, y, first_batch=self.batches - 1)

    @property
    def gram(self) -> torch.Tensor:
        """The (K, d, d) Grams ``Σ x xᵀ`` per class (staged rows not yet folded in). Classes
        still keeping their rows are added from them on reading (a copy then)."""
        kept = [(label, self._small_rows(label)) for label in range(self.num_classes)]
        kept = [(label, rows) for label, rows in kept if rows is not None]
        if not kept:
            return self._gram
        gram = self._gram.clone()
        for label, rows in kept:
            rows = rows.to(gram.dtype)
            gram[label] += rows.T @ rows
        return gram

    def _check_range(self, x=None, y=None, *, first_batch: int | None = None) -> None:
        """Raise if a class Gram left its dtype's range: overflow (rows beyond ~1e154 for a
        float64 Gram, ~1e19 for a float32 one) or underflow (rows below ~1e-146, ~1e-16),
        naming the layer, class and magnitude. The backends scale float32 rows into range for
        their products, so only the Gram itself can hold too little or too much. One read of
        the K Gram diagonals; with the batch at hand (CPU flushes) a class whose Gram is still
        all zero after it got rows is looked at too: zero rows, or squares lost to underflow."""
        largest = torch.diagonal(self._gram, dim1=1, dim2=2).amax(dim=1)
        fault = _range_fault(largest, self._rows_nonzero(largest, x, y), self._gram.dtype)
        if fault is not None:
            label, what = fault
            raise self._out_of_range(label, self._peak(x, y, label), first_batch, what)

    def _rows_nonzero(self, largest: torch.Tensor, x, y) -> torch.Tensor:
        """(K,) bool: classes known to have nonzero rows, for those whose Gram is all zero
        (``largest`` 0): from the batch ``x`` when there is one (a class with rows in it),
        else from the largest entries kept on CUDA; all False where unknown."""
        if x is None:
            if self._class_peaks is not None:
                return self._class_peaks > 0
            return torch.zeros_like(largest, dtype=torch.bool)
        nonzero = torch.zeros(self.num_classes, dtype=torch.bool)
        if x.shape[0]:
            has_rows = torch.bincount(y, minlength=self.num_classes).cpu() > 0
            for label in ((largest == 0).cpu() & has_rows).nonzero().flatten().tolist():
                nonzero[label] = bool(self._peak(x, y, label))
        return nonzero.to(largest.device)

    def _peak(self, x: torch.Tensor | None, y: torch.Tensor | None, label: int) -> float | None:
        """Class ``label``'s largest |entry|: in the batch ``x`` where there is one, else the
        largest folded in (CUDA), else unknown (None)."""
        if x is not None:
            rows = x[y == label]
            return float(rows.abs().max()) if rows.numel() else None
        if self._class_peaks is not None:
            return float(self._class_peaks[label]) or None
        return None

    def _out_of_range(
        self,
        label: int,
        peak: float | None,
        batch: int | None,
        what: str,
        dtype: torch.dtype | None = None,
    ) -> ArithmeticError:
        """The error for class ``label`` whose Gram cannot be held in ``dtype`` (default the
        Grams' own): ``what`` is "overflowed" (OverflowError) or "underflowed"
        (FloatingPointError)."""
        dtype = dtype or self._gram.dtype
        seen = "" if peak is None else f" (rows up to {peak:.3g})"
        flushed = "" if batch is None else f", flushed with batch {batch}"
        info = torch.finfo(dtype)
        if what == "overflowed":
            bound, error = f"pass {info.max:.2g}", OverflowError
        else:
            bound, error = f"fall below {info.tiny:.2g}", FloatingPointError
        wider = " or accumulate in float64" if dtype != torch.float64 else ""
        dtype = str(dtype).removeprefix("torch.")
        return error(
            f"{where(self.layer)}class {label}'s Gram {what} {dtype}{seen}{flushed}: its "
            f"squared activations {bound}; rescale the activations{wider} (MASC's subspaces "
            "do not change with a common scale)"
        )

    def _in_float64_range(self, label: int, rows: torch.Tensor) -> torch.Tensor:
        """Kept rows of class ``label`` whose float64 squares the Gram trick can hold, else
        the same error a Gram of them would raise (float32 rows always can)."""
        largest = rows.to(torch.float64).square().sum(dim=1).amax().reshape(1)
        fault = _range_fault(largest, rows.any().reshape(1), torch.float64)
        if fault is not None:
            raise self._out_of_range(label, float(rows.abs().max()), None, fault[1], torch.float64)
        return rows

    def _keep_small(self, x, y, added, small: list[int]):
        """Keep the new rows of the classes in ``small`` (fewer than d rows before this flush)
        that still have fewer than d after it, instead of adding them to the Grams; a class
        that reaches d here has the rows it kept before added to this flush's rows, and keeps
        none from now on. Returns the rows for the Grams (``x``, ``y`` themselves, uncopied,
        when every class reaches d in this flush: one big batch)."""
        staying = [label for label in small if int(self._counts[label]) < self.dim]
        reached = [label for label in small if int(self._counts[label]) >= self.dim]
        if staying:
            for label in staying:
                if int(added[label]):
                    self._small[label].append(x[y == label])
            moved = torch.isin(y, torch.tensor(staying, device=y.device))
            if bool(moved.any()):
                x, y = x[~moved], y[~moved]
        earlier = [
            (label, torch.cat(self._small[label])) for label in reached if self._small[label]
        ]
        if earlier:
            labels = [torch.full((len(rows),), label, device=y.device) for label, rows in earlier]
            x = torch.cat([x, *(rows for _, rows in earlier)])
            y = torch.cat([y, *labels])
        for label in reached:
            self._small[label] = None
        return x, y

    def _small_rows(self, label: int) -> torch.Tensor | None:
        """Class ``label``'s rows if they were kept (fewer than d), else None."""
        kept = self._small[label]
        if kept is None or not kept:
            return None
        return torch.cat(kept)

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors that :meth:`restore` takes back: the Grams of the classes with d rows or
        more (``gram``, listed in ``gram_labels``), counts, on CUDA the classes' largest
        entries (``class_peaks``, for fit()'s underflow check), and the rows of the classes with
        fewer (their Grams are not kept: a class of 135 rows in 2048 dimensions is 1 MiB of
        rows against 32 MiB of float64 Gram). Staged rows are folded in first."""
        self.flush()
        gram_labels = torch.tensor(
            [label for label, kept in enumerate(self._small) if kept is None], dtype=torch.int64
        )
        state = {
            "gram": self._gram[gram_labels.to(self.device)].cpu().clone(),
            "gram_labels": gram_labels,
            "counts": self._counts.clone(),
        }
        if self._class_peaks is not None:
            state["class_peaks"] = self._class_peaks.cpu().clone()
        small = [(label, self._small_rows(label)) for label in range(self.num_classes)]
        small = [(label, rows) for label, rows in small if rows is not None]
        if small:
            state["small_rows"] = torch.cat([rows for _, rows in small]).cpu()
            state["small_labels"] = torch.cat(
                [torch.full((len(rows),), label, dtype=torch.int64) for label, rows in small]
            )
        return state

    def restore(self, tensors) -> None:
        """Continue from a :meth:`state` (a probe checkpoint; older ones held every Gram)."""
        gram = tensors["gram"]
        labels_with_gram = tensors.get("gram_labels")
        if labels_with_gram is None:
            labels_with_gram = torch.arange(self.num_classes)
        expected = (len(labels_with_gram), self.dim, self.dim)
        if tuple(gram.shape) != expected:
            raise ValueError(
                f"{where(self.layer)}checkpoint Gram has shape {tuple(gram.shape)}, expected "
                f"{expected}"
            )
        self._gram.zero_()
        self._gram[labels_with_gram.to(self.device)] = gram.to(self._gram)
        self._counts = tensors["counts"].clone()
        peaks = tensors.get("class_peaks")
        if self._class_peaks is not None and peaks is not None:
            self._class_peaks.copy_(peaks)
        self._staged, self._staged_rows = [], 0
        rows, labels = tensors.get("small_rows"), tensors.get("small_labels")
        has_gram = set(labels_with_gram.tolist())
        for label in range(self.num_classes):
            mine = rows[labels == label].to(self.device) if rows is not None else None
            if label in has_gram:
                self._small[label] = None  # its Gram holds every row
            elif self._small[label] is not None:
                self._small[label] = [mine] if mine is not None and len(mine) else []
            elif mine is not None and len(mine):  # this accumulator keeps no rows: fold in
                self._fold_rows(label, mine)

    def _fold_rows(self, label: int, rows: torch.Tensor) -> None:
        """Add rows of class ``label`` (checked, on this device) to its Gram."""
        self._ops.gram_update(self._gram, rows, torch.full((len(rows),), label, device=rows.device))

    def merge(self, other: GramAccumulator) -> GramAccumulator:
        """Add another accumulator's rows to this one (e.g. from another worker); returns self."""
        if (other.num_classes, other.dim) != (self.num_classes, self.dim):
            raise ValueError(
                f"cannot merge an accumulator of {other.num_classes} classes × {other.dim} "
                f"features into one of {self.num_classes} × {self.dim}"
            )
        self.flush()
        other.flush()
        self._gram += other._gram.to(device=self.device, dtype=self._gram.dtype)
        if self._class_peaks is not None and other._class_peaks is not None:
            torch.maximum(
                self._class_peaks, other._class_peaks.to(self.device), out=self._class_peaks
            )
        for label in range(self.num_classes):
            mine, theirs = self._small[label], other._small[label]
            theirs = [rows.to(self.device) for rows in theirs or []]
            total = int(self._counts[label] + other._counts[label])
            if mine is not None and other._small[label] is not None and total < self.dim:
                mine += theirs
                continue
            # the class's Gram serves from now on: rows kept on either side go into it
            pending = (mine or []) + theirs
            if pending:
                self._fold_rows(label, torch.cat(pending))
            self._small[label] = None
        self._counts += other.counts
        self.batches += other.batches
        return self

    def reduce_across(self, group) -> GramAccumulator:
        """Sum this accumulator over the ranks of a process group, in place; returns self.

        ``group`` is a :class:`masc_fast.probing.distributed.RankGroup`. Afterwards every rank
        holds the accumulator of every rank's rows: the counts and the (K, d, d) Grams summed
        in this accumulator's dtype (an all-reduce of K·d² values), and the rows of the
        classes with fewer than d rows over all ranks gathered (they stay Gram-trick
        classes, as in one process)."""
        self.flush()
        counts = group.sum(self._counts.clone(), f"{where(self.layer)}row counts")
        small = [
            label
            for label in range(self.num_classes)
            if int(counts[label]) < self.dim and self._small[label] is not None
        ]
        for label in range(self.num_classes):  # the others: their rows go into their Grams
            if label not in small and self._small[label] is not None:
                rows = self._small_rows(label)
                if rows is not None:
                    self._fold_rows(label, rows)
                self._small[label] = None
        group.sum(self._gram, f"{where(self.layer)}class Grams")
        if self._class_peaks is not None:  # the same verdicts on every rank at fit()
            peaks = group.gather(self._class_peaks.cpu(), f"{where(self.layer)}class peaks")
            self._class_peaks.copy_(torch.stack(peaks).amax(dim=0))
        mine = {
            label: rows.cpu() for label in small if (rows := self._small_rows(label)) is not None
        }
        gathered = group.gather(mine, f"{where(self.layer)}small classes' rows")
        for label in small:
            parts = [part[label].to(self.device) for part in gathered if label in part]
            self._small[label] = parts
        self._counts = counts
        return self

    def fit(
        self,
        variance: float = 0.99,
        *,
        method: str = "auto",
        tol: float = 1e-7,
        batched: bool | None = None,
        thresholds: tuple[float, ...] = (),
    ) -> ClassSubspaces:
        """Eigendecompose every class Gram and keep the components the variance rule asks for.

        ``variance`` in (0, 1) is the explained-variance threshold t; a whole number >= 1 is a
        fixed number of components per class. ``method`` chooses the eigensolver ("auto",
        "exact", "partial", "fp32"; see :mod:`masc_fast.linalg.eigensolvers`). ``batched``:
        solve the classes the rule sends to the partial solver all at once
        (:func:`~masc_fast.linalg.eigensolvers.class_eigh_batched`; exact eigh for any it gives up
        on); ``None`` (default) batches when the Grams are on CUDA, where K small per-class
        solves would each launch their own kernels. Same components either way, up to ``tol``.
        ``thresholds``: smaller thresholds the fit will be re-cut at
        (:meth:`ClassSubspaces.with_variance`, the threshold sweep), whose counts
        ``method="fp32"`` (:mod:`masc_fast.linalg.mixed_eigh`) certifies too.
        Classes with fewer rows than d whose rows were kept are solved by the Gram trick
        (method "gram_trick"), whatever ``method`` says.
        Classes without rows, or whose rows are all zero, are left out with a warning; a class
        whose Gram overflowed or underflowed its dtype raises (OverflowError,
        FloatingPointError) naming the class and the magnitude of its rows.
        """
        variance = check_variance(variance)
        eigens = self.fit_eigens(
            variance, method=method, tol=tol, batched=batched, thresholds=thresholds
        )
        return self.subspaces(eigens, variance)

    def subspaces(self, eigens: list[ClassEigen | None], variance: float) -> ClassSubspaces:
        """The :class:`ClassSubspaces` of per-class eigenpairs from :meth:`fit_eigens`."""
        return ClassSubspaces(
            eigens, dim=self.dim, variance=variance, counts=self._counts.clone(), layer=self.layer
        )

    def fit_eigens(
        self,
        variance: float,
        *,
        method: str = "auto",
        tol: float = 1e-7,
        batched: bool | None = None,
        thresholds: tuple[float, ...] = (),
        labels=None,
    ) -> list[ClassEigen | None]:
        """The per-class eigenpairs :meth:`fit` keeps (``None`` for a class left out), for
        the classes in ``labels`` only (``None``: all; the others ``None``, unwarned): a
        distributed probe solves each class on one rank."""
        self.flush()
        self._check_range()
        if batched is None:
            batched = self.device.type == "cuda"
        wanted = set(range(self.num_classes) if labels is None else labels)
        usable = []  # rows per class, 0 for the classes left out or not wanted
        counts = self._counts.tolist()
        for label in range(self.num_classes):
            count = counts[label]
            if label not in wanted:
                usable.append(0)
                continue
            kept = self._small_rows(label)
            nonzero = kept.any() if kept is not None else torch.diagonal(self._gram[label]).any()
            if count == 0 or not bool(nonzero):
                warn_absent_class(self.layer, label, count, stacklevel=4)
                count = 0
            usable.append(count)
        small = {
            label: rows
            for label in range(self.num_classes)
            if usable[label] and (rows := self._small_rows(label)) is not None
        }
        usable = [0 if label in small else count for label, count in enumerate(usable)]
        solve = class_eigh_batched if batched else class_eighs
        eigens: list[ClassEigen | None] = solve(
            self._gram,
            variance=variance,
            counts=usable,
            method=method,
            tol=tol,
            thresholds=thresholds,
        )
        for label, rows in small.items():
            eigens[label] = gram_trick_eigen(self._in_float64_range(label, rows), variance=variance)
        for label, eigen in enumerate(eigens):
            if eigen is not None and not bool((eigen.values > 0).any()):
                warn_absent_class(
                    self.layer,
                    label,
                    counts[label],
                    stacklevel=4,
                    reason=f"has {counts[label]} rows but its Gram has no positive eigenvalue",
                )
                eigens[label] = None
        return eigens
