"""Fitted per-class subspaces: bases, eigenvalues, the rank rule, scoring and storage.

A :class:`ClassSubspaces` holds, for every class k, the leading eigenpairs of
``C_k = X_kᵀ X_k`` (the uncentred second moment; the authors' ±x doubling makes the PCA mean
zero, so nothing is centred) and keeps ``r_k`` of them for the current variance threshold.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from masc_fast._io import read_tensors, write_tensors
from masc_fast._validation import as_tensor, check_activations, check_variance
from masc_fast._version import __version__
from masc_fast.linalg.spectra import (
    ClassEigen,
    components_for_variance,
    scored_through_complement,
)
from masc_fast.scoring import ScoreResult, compute_dtype, score_rows, scores_to_angles

__all__ = ["ClassSubspaces", "PackedBases"]


class PackedBases(NamedTuple):
    """Every class's scoring columns side by side, as the ``subspace_scores`` op takes them.

    ``basis`` (d, R); class k owns columns ``offsets[k]:offsets[k+1]`` ((K+1,) int64, CPU):
    its basis ``U_k``, or where ``complement[k]`` ((K,) bool, CPU) the complement ``W_k``
    (its ``d − r_k`` trailing eigenvectors), scored as ``1 − ‖W_kᵀx‖² / ‖x‖²``.
    """

    basis: torch.Tensor
    offsets: torch.Tensor
    complement: torch.Tensor


class ClassSubspaces:
    """Per-class orthonormal bases at one variance threshold; scores rows by minimum angle.

    Built by :meth:`GramAccumulator.fit` (or :meth:`load`). Class k's basis ``U_k`` (d, r_k)
    holds the leading eigenvectors of ``X_kᵀ X_k``; ``r_k`` is the number of cumulative
    explained-variance ratios <= t, plus one (capped at the rank), or ``t`` itself when
    ``t >= 1``. A class with no (or only all-zero) training rows is *absent*: ``r_k = 0``, it
    scores 0 and is never predicted.

    Scoring: ``score[i, k] = ‖U_kᵀ x_i‖² / ‖x_i‖²`` = cos² of the angle between ``x_i`` and the
    subspace; ``predict`` is the argmax (the minimum angle), lowest class index on exact ties.
    A class that keeps more than half of the dimensions (``r_k > d/2``) and whose fit holds
    all d eigenvectors is scored through its complement, ``1 − ‖W_kᵀ x‖² / ‖x‖²`` with ``W_k``
    the ``d − r_k`` trailing eigenvectors: fewer columns, the same cos² (:attr:`complement`).
    A zero row scores 0 against every class (angle 90°) and is predicted as the lowest present
    class; scores are never NaN.

    Example
    -------
    >>> import torch, masc_fast
    >>> acc = masc_fast.GramAccumulator(num_classes=3, dim=8)
    >>> x, y = torch.randn(300, 8), torch.arange(300) % 3
    >>> acc.update(x, y)
    >>> subspaces = acc.fit(variance=0.9)
    >>> subspaces.predict(x).shape
    torch.Size([300])
    """

    def __init__(
        self,
        eigens: list[ClassEigen | None],
        *,
        dim: int,
        variance: float,
        counts: torch.Tensor,
        layer: str | None = None,
    ):
        self._eigens = list(eigens)
        self.dim = int(dim)
        self.variance = check_variance(variance)
        self.counts = counts.to(torch.int64).cpu()
        self.layer = layer
        ranks = []
        for label, eigen in enumerate(self._eigens):
            if eigen is None:
                ranks.append(0)
                continue
            rank = components_for_variance(eigen.values, eigen.total, self.variance, eigen.rank_cap)
            if rank > eigen.vectors.shape[1]:
                raise ValueError(
                    f"{self._name()}class {label} needs {rank} components at variance "
                    f"{self.variance} but only {eigen.vectors.shape[1]} were computed; refit "
                    f"from the GramAccumulator with the higher threshold"
                )
            ranks.append(rank)
        self.num_components = torch.tensor(ranks, dtype=torch.int64)
        self._packed: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _name(self) -> str:
        return f"layer {self.layer!r}: " if self.layer is not None else ""

    # ----------------------------------------------------------------- structure
    @property
    def num_classes(self) -> int:
        return len(self._eigens)

    @property
    def present(self) -> torch.Tensor:
        """Boolean (K,) mask of classes that can be predicted."""
        return self.num_components > 0

    @property
    def bases(self) -> list[torch.Tensor | None]:
        """Per class the orthonormal basis (d, r_k), float64, or ``None`` if absent."""
        return [
            eigen.vectors[:, :rank] if eigen is not None and rank else None
            for eigen, rank in zip(self._eigens, self.num_components.tolist())
        ]

    @property
    def eigenvectors(self) -> list[torch.Tensor | None]:
        """Per class every eigenvector the fit holds (d, m), descending: the kept ones, or
        all d where the class keeps more than half of them (for :attr:`complement`)."""
        return [eigen.vectors if eigen is not None else None for eigen in self._eigens]

    @property
    def complement(self) -> torch.Tensor:
        """(K,) bool: classes scored through their complement ``W_k`` (``r_k > d/2`` and the
        fit holds all d eigenvectors, as the exact solver keeps them when ``r_k > d/2``)."""
        return torch.tensor(
            [
                eigen is not None
                and eigen.vectors.shape[1] == self.dim
                and scored_through_complement(rank, self.dim)
                for eigen, rank in zip(self._eigens, self.num_components.tolist())
            ],
            dtype=torch.bool,
        )

    @property
    def eigenvalues(self) -> list[torch.Tensor | None]:
        """Per class the computed leading eigenvalues of ``X_kᵀ X_k`` (descending)."""
        return [eigen.values if eigen is not None else None for eigen in self._eigens]

    @property
    def methods(self) -> list[str | None]:
        """Per class how its eigenpairs were found ("exact", "partial", "gram_trick",
        "randomized"), ``None`` for absent classes."""
        return [eigen.method if eigen is not None else None for eigen in self._eigens]

    @property
    def explained_variance(self) -> torch.Tensor:
        """(K,) fraction of each class's energy captured by its kept components."""
        fractions = [
            float(eigen.values[:rank].sum()) / eigen.total if eigen is not None and rank else 0.0
            for eigen, rank in zip(self._eigens, self.num_components.tolist())
        ]
        return torch.tensor(fractions, dtype=torch.float64)

    def with_variance(self, variance: float) -> ClassSubspaces:
        """The same fit re-thresholded at ``variance`` (no refit; needs the eigenpairs at hand)."""
        return ClassSubspaces(
            self._eigens, dim=self.dim, variance=variance, counts=self.counts, layer=self.layer
        )

    def packed(self, dtype: torch.dtype, device: torch.device | str) -> PackedBases:
        """Each class's scoring columns side by side (:class:`PackedBases`), cached: ``U_k``,
        or ``W_k`` for the classes in :attr:`complement`."""
        key = (dtype, str(device))
        if key not in self._packed:
            complement = self.complement
            blocks = []
            for eigen, rank, flipped in zip(
                self._eigens, self.num_components.tolist(), complement.tolist()
            ):
                if eigen is not None and rank:
                    blocks.append(eigen.vectors[:, rank:] if flipped else eigen.vectors[:, :rank])
                else:
                    blocks.append(torch.zeros((self.dim, 0), dtype=torch.float64))
            widths = torch.tensor([block.shape[1] for block in blocks], dtype=torch.int64)
            basis = torch.cat([block.to(device=device, dtype=dtype) for block in blocks], dim=1)
            offsets = torch.zeros(self.num_classes + 1, dtype=torch.int64)
            offsets[1:] = torch.cumsum(widths, 0)
            packed = PackedBases(basis.contiguous(), offsets, complement)
            self._packed[key] = packed
            if not bool(complement.any()):
                self._share_packed(packed.basis, offsets)
        return self._packed[key]

    def _share_packed(self, basis: torch.Tensor, offsets: torch.Tensor) -> None:
        """Make each class's vectors views of ``basis`` when they hold exactly its columns in
        the same dtype and device, so a large fit is not kept twice (stored strategies)."""
        ranks = self.num_components.tolist()
        for eigen, rank in zip(self._eigens, ranks):
            if (
                eigen is not None
                and rank
                and (
                    eigen.vectors.shape[1] != rank
                    or eigen.vectors.dtype != basis.dtype
                    or eigen.vectors.device != basis.device
                )
            ):
                return
        for label, eigen in enumerate(self._eigens):
            if eigen is not None and ranks[label]:
                start, stop = int(offsets[label]), int(offsets[label + 1])
                self._eigens[label] = replace(eigen, vectors=basis[:, start:stop])

    # ----------------------------------------------------------------- scoring
    def score(
        self,
        x,
        *,
        backend: str | None = "auto",
        batch: int | None = None,
        precision: str = "fp32",
    ) -> ScoreResult:
        """Validated scores, predictions and the backend that ran, as torch tensors.

        ``precision`` (float32 rows): "fp32" exact products, or a GPU mode "tf32", "tf32x3",
        "bf16" (see :data:`masc_fast.backends.PRECISIONS`).
        """
        x = check_activations(as_tensor(x, "x"), layer=self.layer, batch=batch, dim=self.dim)
        return self.score_validated(x, backend=backend, precision=precision)

    def score_validated(
        self, x: torch.Tensor, *, backend: str | None = "auto", precision: str = "fp32"
    ) -> ScoreResult:
        """:meth:`score` of rows the caller has checked (finite, (n, d)), as the probe's passes
        do once per batch for every fit; raises only when no class has a subspace."""
        if not bool(self.present.any()):
            raise ValueError(f"{self._name()}no class has a subspace; nothing can be predicted")
        x = x.to(compute_dtype(x))
        basis, offsets, complement = self.packed(x.dtype, x.device)
        return score_rows(
            x, basis, offsets, complement=complement, backend=backend, precision=precision
        )

    def scores(self, x, *, backend: str | None = "auto", precision: str = "fp32"):
        """cos² (n, K) of the angle between each row and each class subspace."""
        return _like(self.score(x, backend=backend, precision=precision).scores, x)

    def predict(self, x, *, backend: str | None = "auto", precision: str = "fp32"):
        """Class at the minimum angle for each row (n,), int64."""
        return _like(self.score(x, backend=backend, precision=precision).pred, x)

    def angles(self, x, *, backend: str | None = "auto", precision: str = "fp32"):
        """Angles in degrees (n, K); 90 for zero rows and absent classes."""
        scores = self.score(x, backend=backend, precision=precision).scores
        return _like(scores_to_angles(scores), x)

    # ----------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file, atomically, with a checksum :meth:`load` verifies."""
        tensors = {"counts": self.counts.contiguous()}
        meta = {
            "dim": self.dim,
            "variance": self.variance,
            "layer": self.layer,
            "version": __version__,
            "classes": [],
        }
        for label, eigen in enumerate(self._eigens):
            if eigen is None:
                meta["classes"].append(None)
                continue
            tensors[f"values.{label}"] = eigen.values.detach().cpu().contiguous()
            tensors[f"vectors.{label}"] = eigen.vectors.detach().cpu().contiguous()
            meta["classes"].append(
                {"total": eigen.total, "rank_cap": eigen.rank_cap, "method": eigen.method}
            )
        write_tensors(path, tensors, {"masc_fast": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: torch.device | str = "cpu") -> ClassSubspaces:
        """Read a file written by :meth:`save`; ``ValueError`` naming the file when it is not
        one, is truncated or corrupt, or fails its checksum."""
        tensors, metadata = read_tensors(path)
        raw = metadata.get("masc_fast")
        if raw is None:
            raise ValueError(f"{path} is not a masc_fast ClassSubspaces file (no metadata)")
        try:
            meta = json.loads(raw)
            eigens: list[ClassEigen | None] = []
            for label, info in enumerate(meta["classes"]):
                if info is None:
                    eigens.append(None)
                    continue
                eigens.append(
                    ClassEigen(
                        tensors[f"values.{label}"].to(device),
                        tensors[f"vectors.{label}"].to(device),
                        info["total"],
                        info["rank_cap"],
                        info["method"],
                    )
                )
            counts = tensors["counts"]
            dim, variance, layer = meta["dim"], meta["variance"], meta["layer"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: a ClassSubspaces file with a damaged header ({error!r})"
            ) from error
        return cls(eigens, dim=dim, variance=variance, counts=counts, layer=layer)

    def __repr__(self) -> str:
        return (
            f"ClassSubspaces({self._name()}classes={self.num_classes}, dim={self.dim}, "
            f"variance={self.variance}, components={int(self.num_components.sum())})"
        )


def _like(result: torch.Tensor, x):
    """Return NumPy for NumPy input, torch otherwise."""
    return result.cpu().numpy() if isinstance(x, np.ndarray) else result
