"""The five baseline probes of SPEC §7.2, each with ``fit(x, y)`` / ``predict(x)``.

Logistic regression, nearest class mean and k-NN are written in torch and run wherever their
input tensors live (CPU or GPU), in bounded memory: every pass over the rows goes in chunks.
LDA and QDA (:mod:`.discriminant`, re-exported here) are scikit-learn's own estimators with
their defaults, fitted on float64 NumPy copies on the CPU, so their behaviour (including their
errors on singular covariances) is scikit-learn's.

All probes learn ``classes_`` (the sorted distinct training labels, K of them) and
``n_features_in_`` and predict labels from ``classes_``. Where scores tie, the smallest label
wins, as ``numpy.argmax`` over ``classes_`` does in scikit-learn.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masc_fast.pipeline.experiments.baselines.discriminant import LDAProbe, QDAProbe

__all__ = [
    "PROBE_NAMES",
    "KNeighborsProbe",
    "LDAProbe",
    "LogisticRegressionProbe",
    "NearestClassMeanProbe",
    "QDAProbe",
    "make_probe",
]

PROBE_NAMES = ("logistic_regression", "ncm", "knn", "lda", "qda")

#: Elements of the largest temporary a chunked pass allocates (128 MiB of float32): large
#: enough that each chunk is one efficient GEMM, small enough for any GPU next to the data.
_CHUNK_ELEMENTS = 1 << 25


def _rows_per_chunk(width: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(int(width), 1))


def _check_features(x, name: str, n_features: int | None = None) -> torch.Tensor:
    """``x`` as a checked 2-D floating tensor (finite, with ``n_features`` columns if given)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name}: x must be 2-D (n, d), got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name}: x must have a floating dtype, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: x has no rows")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(
            f"{name}: x has {x.shape[1]} features but the probe was fitted on {n_features}"
        )
    step = _rows_per_chunk(x.shape[1], _CHUNK_ELEMENTS)
    for start in range(0, x.shape[0], step):
        finite = torch.isfinite(x[start : start + step]).all(dim=1)
        if not bool(finite.all()):
            row = start + int(torch.nonzero(~finite)[0])
            raise ValueError(f"{name}: x holds NaN or Inf (first in row {row})")
    return x


def _check_labels(y, x: torch.Tensor, name: str) -> torch.Tensor:
    """``y`` as a 1-D int64 tensor on ``x``'s device, one label per row of ``x``."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(np.array(y))  # a copy: memmaps and read-only arrays are fine
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: y must be a torch.Tensor or numpy array, got {type(y).__name__}")
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name}: y must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: x has {x.shape[0]} rows but y has {y.shape[0]} labels")
    return y.to(device=x.device, dtype=torch.int64)


def _encode(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct labels, index of each label among them)."""
    classes, codes = torch.unique(y, sorted=True, return_inverse=True)
    return classes, codes


def _check_fitted(probe, attribute: str) -> None:
    if not hasattr(probe, attribute):
        raise RuntimeError(f"{type(probe).__name__} is not fitted; call fit(x, y) first")


class _Positions(torch.utils.data.Dataset):
    """Row numbers ``0 .. n-1``; fetched a whole batch at a time (``__getitems__``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.as_tensor(indices, dtype=torch.int64)


def _as_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch


class LogisticRegressionProbe:
    """Multinomial logistic regression: one ``nn.Linear(D, K)`` trained with Adam (SPEC §7.2).

    Cross-entropy on the logits ``x Wᵀ + b``, Adam (``lr``, default betas, no weight decay),
    ``epochs`` passes over the rows in mini-batches of ``batch_size``, reshuffled every epoch.
    The weights start from ``nn.Linear``'s default initialisation. Seed ``seed`` drives both the
    initialisation and the shuffles exactly as ``torch.manual_seed(seed)`` followed by
    ``nn.Linear(D, K)`` and a ``DataLoader(..., batch_size, shuffle=True)`` would (the authors'
    recipe); the global RNG state is restored afterwards, so the probe is deterministic and
    does not disturb the caller's random stream.

    Parameters
    ----------
    epochs : int, default 20
    batch_size : int, default 128
    lr : float, default 1e-3
    seed : int, default 42

    Attributes
    ----------
    classes_ : torch.Tensor, int64, shape (K,)
    n_features_in_ : int
    linear_ : torch.nn.Linear
        The trained layer, on the training rows' device and dtype.
    loss_curve_ : list of float
        Mean training loss of each epoch.

    Example
    -------
    >>> x = torch.randn(300, 8); y = (x[:, 0] > 0).long()
    >>> probe = LogisticRegressionProbe(epochs=5).fit(x, y)
    >>> probe.predict(x).shape
    torch.Size([300])
    """

    def __init__(
        self, *, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, seed: int = 42
    ) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def fit(self, x: torch.Tensor, y) -> LogisticRegressionProbe:
        """Train on ``x`` (float tensor ``(n, D)``, any device) and integer labels ``y`` ``(n,)``."""
        name = type(self).__name__
        for field in ("epochs", "batch_size", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name}: {field} must be a non-negative integer, got {value!r}")
        if self.batch_size < 1:
            raise ValueError(f"{name}: batch_size must be at least 1, got {self.batch_size}")
        x = _check_features(x, name)
        y = _check_labels(y, x, name)
        classes, codes = _encode(y)
        n, width = x.shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            linear = nn.Linear(width, len(classes))
            # The same DataLoader the recipe uses, over row numbers only: it draws its seeds
            # from the global generator exactly as a loader over the data itself would.
            loader = torch.utils.data.DataLoader(
                _Positions(n), batch_size=self.batch_size, shuffle=True, collate_fn=_as_batch
            )
            linear = linear.to(device=x.device, dtype=x.dtype)
            optimizer = torch.optim.Adam(linear.parameters(), lr=self.lr)
            self.loss_curve_ = []
            with torch.enable_grad():
                for _ in range(self.epochs):
                    total = torch.zeros((), device=x.device, dtype=torch.float64)
                    for rows in loader:
                        rows = rows.to(x.device)
                        loss = F.cross_entropy(linear(x[rows]), codes[rows])
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        total += loss.detach().double() * rows.numel()
                    self.loss_curve_.append(float(total) / n)
        linear.requires_grad_(False)
        self.classes_, self.n_features_in_, self.linear_ = classes, width, linear
        return self

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, K)`` for ``x`` ``(n, D)``, on ``x``'s device."""
        _check_fitted(self, "linear_")
        x = _check_features(x, type(self).__name__, self.n_features_in_)
        step = _rows_per_chunk(self.n_features_in_ + len(self.classes_), _CHUNK_ELEMENTS)
        with torch.no_grad():
            return torch.cat([self.linear_(x[i : i + step]) for i in range(0, len(x), step)])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels (int64, ``(n,)``, on ``x``'s device): the class of the largest logit."""
        scores = self.decision_function(x)
        return self.classes_[scores.argmax(dim=1)]


class NearestClassMeanProbe:
    """Nearest class mean by cosine similarity (SPEC §7.2).

    ``μ_k`` = the mean of the raw training rows of class k (accumulated in float64); a row
    ``x`` gets the class maximising ``cos(x, μ_k) = xᵀμ_k / (‖x‖ ‖μ_k‖)``. A zero row or mean
    has similarity 0 to everything (its normalised vector is zero, as in
    ``sklearn.preprocessing.normalize``).

    Parameters
    ----------
    chunk_elements : int, default 2**25
        Largest temporary of a chunked pass, in elements.

    Attributes
    ----------
    classes_ : torch.Tensor, int64, shape (K,)
    n_features_in_ : int
    means_ : torch.Tensor, float64, shape (K, D)

    Example
    -------
    >>> x = torch.randn(200, 5); y = (x[:, 0] > 0).long()
    >>> NearestClassMeanProbe().fit(x, y).predict(x[:3]).shape
    torch.Size([3])
    """

    def __init__(self, *, chunk_elements: int = _CHUNK_ELEMENTS) -> None:
        self.chunk_elements = chunk_elements

    def fit(self, x: torch.Tensor, y) -> NearestClassMeanProbe:
        """Class means of ``x`` (float tensor ``(n, D)``, any device) under labels ``y``."""
        name = type(self).__name__
        x = _check_features(x, name)
        y = _check_labels(y, x, name)
        classes, codes = _encode(y)
        sums = torch.zeros(len(classes), x.shape[1], device=x.device, dtype=torch.float64)
        step = _rows_per_chunk(x.shape[1], self.chunk_elements)
        for start in range(0, len(x), step):
            sums.index_add_(0, codes[start : start + step], x[start : start + step].double())
        counts = torch.bincount(codes, minlength=len(classes)).to(torch.float64)
        self.classes_, self.n_features_in_ = classes, x.shape[1]
        self.means_ = sums / counts[:, None]
        return self

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``(n, K)`` of the rows of ``x`` to the class means."""
        _check_fitted(self, "means_")
        x = _check_features(x, type(self).__name__, self.n_features_in_)
        directions = F.normalize(self.means_, dim=1).to(x.dtype)
        step = _rows_per_chunk(x.shape[1], self.chunk_elements)
        return torch.cat(
            [F.normalize(x[i : i + step], dim=1) @ directions.T for i in range(0, len(x), step)]
        )

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels (int64, ``(n,)``, on ``x``'s device) of the most similar class mean."""
        scores = self.decision_function(x)
        return self.classes_[scores.argmax(dim=1)]


class KNeighborsProbe:
    """k nearest neighbours by cosine distance, uniform vote (SPEC §7.2).

    The semantics of ``KNeighborsClassifier(n_neighbors=5, metric="cosine")`` (brute force):
    the ``n_neighbors`` training rows of largest cosine similarity (smallest ``1 - cos``) vote
    with equal weight; a tie in the vote goes to the smallest label. Which rows are chosen when
    several training rows sit at exactly the same distance is unspecified, in scikit-learn as
    here. Query rows are processed in chunks: each chunk's similarities to all training rows
    form one ``(chunk, n_train)`` temporary of at most ``chunk_elements`` elements, reduced at
    once by ``torch.topk``. The training rows are kept by reference, not copied.

    Parameters
    ----------
    n_neighbors : int, default 5
    chunk_elements : int, default 2**25

    Attributes
    ----------
    classes_ : torch.Tensor, int64, shape (K,)
    n_features_in_ : int

    Example
    -------
    >>> x = torch.randn(100, 4); y = (x[:, 0] > 0).long()
    >>> KNeighborsProbe().fit(x, y).predict(x[:2]).tolist() == y[:2].tolist()
    True
    """

    def __init__(self, n_neighbors: int = 5, *, chunk_elements: int = _CHUNK_ELEMENTS) -> None:
        self.n_neighbors = n_neighbors
        self.chunk_elements = chunk_elements

    def fit(self, x: torch.Tensor, y) -> KNeighborsProbe:
        """Keep the training rows ``x`` (float ``(n, D)``, any device) and labels ``y``."""
        name = type(self).__name__
        k = self.n_neighbors
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"{name}: n_neighbors must be a positive integer, got {k!r}")
        x = _check_features(x, name)
        y = _check_labels(y, x, name)
        if k > len(x):
            raise ValueError(f"{name}: n_neighbors = {k} but only {len(x)} training rows")
        self.classes_, self._codes = _encode(y)
        self.n_features_in_ = x.shape[1]
        self._train = x
        # 1/‖x_j‖, with zero rows left at zero similarity (sklearn's normalize divides by 1).
        self._inverse_norms = 1.0 / torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12)
        return self

    def _chunks(self, x: torch.Tensor):
        _check_fitted(self, "_train")
        x = _check_features(x, type(self).__name__, self.n_features_in_)
        step = _rows_per_chunk(len(self._train), self.chunk_elements)
        for start in range(0, len(x), step):
            similarities = F.normalize(x[start : start + step], dim=1) @ self._train.T
            similarities *= self._inverse_norms.to(similarities.dtype)
            yield similarities.topk(self.n_neighbors, dim=1, sorted=True)

    def kneighbors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities and training-row indices of each row's neighbours.

        Returns
        -------
        similarities : torch.Tensor, shape (n, n_neighbors), largest first
        indices : torch.Tensor, int64, shape (n, n_neighbors)
        """
        found = list(self._chunks(x))
        return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels (int64, ``(n,)``, on ``x``'s device): the majority label of the neighbours."""
        labels = []
        for found in self._chunks(x):
            votes = torch.zeros(
                len(found.indices), len(self.classes_), device=x.device, dtype=torch.int64
            )
            votes.scatter_add_(1, self._codes[found.indices], torch.ones_like(found.indices))
            labels.append(self.classes_[votes.argmax(dim=1)])  # first maximum: smallest label
        return torch.cat(labels)


_PROBES = {
    "logistic_regression": LogisticRegressionProbe,
    "ncm": NearestClassMeanProbe,
    "knn": KNeighborsProbe,
    "lda": LDAProbe,
    "qda": QDAProbe,
}


def make_probe(name: str):
    """A new, unfitted probe by its name in :data:`PROBE_NAMES`, with the SPEC's settings.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).

    Example
    -------
    >>> type(make_probe("knn")).__name__
    'KNeighborsProbe'
    """
    if name not in _PROBES:
        raise ValueError(f"unknown probe {name!r}; expected one of {PROBE_NAMES}")
    return _PROBES[name]()
