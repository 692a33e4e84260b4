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

from masc_fast._progress import progress_bar
from masc_fast.accumulator import warn_absent_class
from masc_fast.probing.activation_store import LayerShards
from masc_fast.probing.stored_fit import choose_stored_method, fit_stored_class
from masc_fast.subspace import ClassSubspaces

__all__ = ["StoredLayer"]


class StoredLayer:
    """Shards plus exact per-class energies of one layer, for every label set.

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

    @property
    def label_sets(self) -> tuple[str, ...]:
        return self.shards.label_sets

    def update(self, x: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> None:
        """Add a checked (n, d) batch and its labels in every label set."""
        energy = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).square().cpu()
        for name in self.label_sets:
            y = labels[name].cpu()
            self.totals[name].index_add_(0, y, energy)
            self.counts[name] += torch.bincount(y, minlength=self.num_classes)
        self.shards.append(x, labels)

    # ---- checkpoints
    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able shard rows, tensors) that :meth:`restore` takes back; commits the shards."""
        rows = self.shards.commit()
        tensors = {}
        for name in self.label_sets:
            tensors[f"totals/{name}"] = self.totals[name].clone()
            tensors[f"counts/{name}"] = self.counts[name].clone()
        return {"rows": rows}, tensors

    def restore(self, meta: dict, tensors: Mapping[str, torch.Tensor]) -> None:
        self.shards.restore(meta["rows"])
        for name in self.label_sets:
            self.totals[name] = tensors[f"totals/{name}"].clone()
            self.counts[name] = tensors[f"counts/{name}"].clone()

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
    ) -> ClassSubspaces:
        """Fit every class of ``label_set`` from its stored rows (absent classes warned)."""
        self.shards.flush()
        eigens = []
        chunk_bytes = max(1 << 20, self.memory_budget // 8)
        counts = self.counts[label_set]
        bar = progress_bar(
            range(self.num_classes),
            desc=f"probe: eigensolve {self.layer}/{label_set} ({self.method})",
            unit="class",
            disable=not progress,
        )
        for label in bar:
            rows, total = int(counts[label]), float(self.totals[label_set][label])
            if rows == 0 or total <= 0:
                warn_absent_class(self.layer, label, rows, stacklevel=3)
                eigens.append(None)
                continue
            eigens.append(
                fit_stored_class(
                    self.shards,
                    label_set,
                    label,
                    variance=variance,
                    total=total,
                    method=self.class_method(rows),
                    chunk_bytes=chunk_bytes,
                    tol=tol,
                    device=device,
                )
            )
        return ClassSubspaces(
            eigens, dim=self.dim, variance=variance, counts=counts.clone(), layer=self.layer
        )
