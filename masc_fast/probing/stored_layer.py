"""One layer fitted from stored rows: the streaming side (shards, exact energies) and the fit.

:class:`StoredLayer` is the ``stored`` strategy's counterpart of one
:class:`~masc_fast.GramAccumulator` per label set: in the streaming pass it appends each batch
to the layer's class-grouped shards and adds every row's exact energy ``‖x‖²`` (float64) to its
class total in each label set; :meth:`StoredLayer.fit` then fits each class from its rows
(:func:`masc_fast.probing.stored_fit.fit_stored_class`), by the Gram trick or randomized PCA.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from masc_fast._magnitude import out_of_range_exponents
from masc_fast._progress import progress_bar
from masc_fast.accumulator import warn_absent_class
from masc_fast.probing.activation_store import LayerShards
from masc_fast.probing.stored_fit import GatheredRows, choose_stored_method, fit_stored_class
from masc_fast.subspace import ClassSubspaces

__all__ = ["StoredLayer"]


class StoredLayer:
    """Shards plus exact per-class energies (and largest entries) of one layer, for every
    label set.

    ``method``: ``"stored"`` (each class by :func:`choose_stored_method`), ``"gram_trick"`` or
    ``"randomized"`` for all classes. ``memory_budget`` sizes the read chunks and the choice.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        layer: str,
        num_classes: int,
        dim: int,
        label_sets: tuple[str, ...],
        method: str = "stored",
        memory_budget: int,
        dtype: torch.dtype = torch.float32,
    ):
        self.layer = layer
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.method = method
        self.memory_budget = int(memory_budget)
        self.shards = LayerShards(
            root,
            layer=layer,
            num_classes=num_classes,
            dim=dim,
            label_sets=label_sets,
            dtype=dtype,
            stage_bytes=max(1 << 20, min(64 << 20, self.memory_budget // 16)),
        )
        self.totals = {name: torch.zeros(num_classes, dtype=torch.float64) for name in label_sets}
        self.counts = {name: torch.zeros(num_classes, dtype=torch.int64) for name in label_sets}
        # Each class's largest |entry|: the fit reads a class far outside float32's product
        # range scaled by a power of two (masc_fast._magnitude); zero where unknown.
        self.peaks = {name: torch.zeros(num_classes, dtype=torch.float64) for name in label_sets}

    @property
    def label_sets(self) -> tuple[str, ...]:
        return self.shards.label_sets

    def update(self, x: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> None:
        """Add a checked (n, d) batch and its labels in every label set."""
        energy = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).square().cpu()
        peak = x.abs().amax(dim=1).to(torch.float64).cpu()
        self._check_storable(peak)
        for name in self.label_sets:
            y = labels[name].cpu()
            self.totals[name].index_add_(0, y, energy)
            self.counts[name] += torch.bincount(y, minlength=self.num_classes)
            self.peaks[name].scatter_reduce_(0, y, peak, reduce="amax")
        self.shards.append(x, labels)

    def _check_storable(self, peaks: torch.Tensor) -> None:
        """Raise if a row cannot be kept in the store's dtype: an entry past its largest value
        (Inf on disk: a float16 store holds 65504) or a nonzero row whose entries all fall
        below its smallest subnormal (stored as a zero row)."""
        info = torch.finfo(self.shards.dtype)
        dtype = str(self.shards.dtype).removeprefix("torch.")
        smallest = info.tiny * info.eps  # the smallest subnormal
        top = float(peaks.max()) if peaks.numel() else 0.0
        faint = peaks[(peaks > 0) & (peaks < smallest)]
        if top <= info.max and not faint.numel():
            return
        seen = f"rows up to {top:.3g}" if top > info.max else f"a row of {float(faint[0]):.3g}"
        advice = "store_dtype=torch.float32, " if self.shards.dtype != torch.float32 else ""
        raise ValueError(
            f"layer {self.layer!r}: the stored strategy keeps rows as {dtype}, which cannot hold "
            f"{seen} ({dtype} holds {smallest:.2g} … {info.max:.3g}); use {advice}"
            "strategy='gram' or rescale the activations"
        )

    # ---- checkpoints
    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able shard rows, tensors) that :meth:`restore` takes back; commits the shards."""
        rows = self.shards.commit()
        tensors = {}
        for name in self.label_sets:
            tensors[f"totals/{name}"] = self.totals[name].clone()
            tensors[f"counts/{name}"] = self.counts[name].clone()
            tensors[f"peaks/{name}"] = self.peaks[name].clone()
        return {"rows": rows}, tensors

    def restore(self, meta: dict, tensors: Mapping[str, torch.Tensor]) -> None:
        self.shards.restore(meta["rows"])
        for name in self.label_sets:
            self.totals[name] = tensors[f"totals/{name}"].clone()
            self.counts[name] = tensors[f"counts/{name}"].clone()
            peaks = tensors.get(f"peaks/{name}")  # absent from older checkpoints: unknown
            self.peaks[name] = (
                torch.zeros_like(self.totals[name]) if peaks is None else peaks.clone()
            )

    def reduce_across(self, group) -> None:
        """Sum the exact energies and row counts over the ranks of a distributed probe
        (:class:`~masc_fast.probing.distributed.RankGroup`); the shards stay on their rank."""
        self.shards.flush()
        for name in self.label_sets:
            group.sum(self.totals[name], f"layer {self.layer!r}: {name} class energies")
            group.sum(self.counts[name], f"layer {self.layer!r}: {name} row counts")
            peaks = group.gather(self.peaks[name], f"layer {self.layer!r}: {name} class peaks")
            self.peaks[name] = torch.stack(peaks).amax(dim=0)

    # ---- fit
    def class_method(self, rows: int) -> str:
        if self.method in ("gram_trick", "randomized"):
            return self.method
        return choose_stored_method(rows, self.dim, self.memory_budget)

    def fit(
        self,
        label_set: str,
        variance: float,
        *,
        progress: bool = False,
        tol: float = 1e-5,
        device: torch.device | str = "cpu",
        group=None,
    ) -> ClassSubspaces:
        """Fit every class of ``label_set`` from its stored rows (absent classes warned).

        With a :class:`~masc_fast.probing.distributed.RankGroup` (after
        :meth:`reduce_across`): every rank runs every randomized class in step, its operator
        summed over the ranks; Gram-trick classes go to their owners a round of one class per
        rank at a time (rows gathered there, solved in parallel); the solutions are shared."""
        self.shards.flush()
        eigens: list = [None] * self.num_classes
        chunk_bytes = max(1 << 20, self.memory_budget // 8)
        counts = self.counts[label_set]
        bar = progress_bar(
            total=self.num_classes,
            desc=f"probe: eigensolve {self.layer}/{label_set} ({self.method})",
            unit="class",
            disable=not progress,
        )
        fit = {"variance": variance, "chunk_bytes": chunk_bytes, "tol": tol, "device": device}
        shifts = out_of_range_exponents(self.peaks[label_set], torch.float32).tolist()
        spread = []  # Gram-trick classes of a distributed probe, solved by their owners
        for label in range(self.num_classes):
            rows, total = int(counts[label]), float(self.totals[label_set][label])
            if rows == 0 or total <= 0:
                if group is None or group.owner(label) == group.rank:
                    warn_absent_class(self.layer, label, rows, stacklevel=3)
                bar.update(1)
                continue
            method = self.class_method(rows)
            if group is not None and method == "gram_trick":
                spread.append(label)
                continue
            reduce = None
            if group is not None:
                what = f"layer {self.layer!r} class {label}: randomized PCA"
                reduce = lambda image, what=what: group.sum(image, what)  # noqa: E731
            eigens[label] = fit_stored_class(
                self.shards,
                label_set,
                label,
                total=total,
                method=method,
                rows=rows,
                reduce=reduce,
                shift=shifts[label],
                **fit,
            )
            bar.update(1)
        if spread:
            eigens = self._fit_spread(label_set, spread, eigens, group, fit, bar, shifts)
        bar.close()
        return ClassSubspaces(
            eigens, dim=self.dim, variance=variance, counts=counts.clone(), layer=self.layer
        )

    def _fit_spread(self, label_set, labels, eigens, group, fit, bar, shifts) -> list:
        """Gram-trick classes over the ranks: in rounds of one class per rank, each rank
        sends its rows of the round's classes to their owners, which solve them; then every
        rank gets every solution."""
        from masc_fast.probing.distributed import share_eigens

        owned = []
        for start in range(0, len(labels), group.size):
            mine = None
            for owner, label in enumerate(labels[start : start + group.size]):
                rows = self.shards.read(label_set, label, device="cpu")
                what = f"layer {self.layer!r} class {label}: rows to rank {owner}"
                gathered = group.gather_to(rows, owner, what)
                if gathered is not None:
                    mine = (label, torch.cat(gathered))
            if mine is not None:
                label, rows = mine
                eigens[label] = fit_stored_class(
                    GatheredRows(rows, self.dim),
                    label_set,
                    label,
                    total=float(self.totals[label_set][label]),
                    method="gram_trick",
                    shift=shifts[label],
                    **fit,
                )
                owned.append(label)
            bar.update(min(group.size, len(labels) - start))
        what = f"layer {self.layer!r}: sharing the Gram-trick bases"
        return share_eigens(group, eigens, owned, fit["device"], what)
