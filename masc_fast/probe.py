"""``probe(model, loader)``: fit every class subspace of every layer in one streamed pass.

Pass 1 runs the model once over the training data; forward hooks feed each layer's
activations into per-layer :class:`GramAccumulator` s, one per label set ("corrupted" = the
labels the model was trained on, "true" when batches carry them too). After the fit, scoring
passes run the training data and each evaluation split through the model again and score
every layer against every fitted set of subspaces.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ._validation import (
    as_tensor,
    check_activations,
    check_labels,
    check_precision,
    check_variance,
    where,
)
from .accumulator import GramAccumulator
from .activations import ActivationTap, resolve_layers
from .backends import select_backend
from .results import ProbeResult

__all__ = ["probe"]

CORRUPTED, TRUE = "corrupted", "true"


def _unpack(batch, index: int, *, train: bool):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        kind = "(x, y) or (x, y, y_true)" if train else "(x, y_true)"
        raise ValueError(
            f"batch {index}: expected a tuple {kind}, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    if train:
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)
    return batch[0], batch[-1], None


def _labels(value, num_classes: int, n: int, index: int, name: str, device) -> torch.Tensor:
    return check_labels(as_tensor(value, name), num_classes, n=n, name=name, batch=index).to(device)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class _Counter:
    """Running correct/total counts keyed by anything."""

    def __init__(self):
        self.correct: dict = {}
        self.total: dict = {}

    def add(self, key, pred: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct[key] = self.correct.get(key, 0) + int((pred == labels).sum())
        self.total[key] = self.total.get(key, 0) + int(labels.numel())

    def accuracy(self, key) -> float:
        return self.correct[key] / self.total[key] if self.total.get(key) else float("nan")


def probe(
    model: nn.Module,
    train_loader: Iterable,
    eval_loaders: Mapping[str, Iterable] | None = None,
    *,
    layers: Sequence[str] | Mapping[str, str] | None = None,
    num_classes: int | None = None,
    variance: float = 0.99,
    device: torch.device | str | None = None,
    backend: str | None = "auto",
    progress: bool = True,
    accumulate_dtype: torch.dtype = torch.float64,
    eigensolver: str = "auto",
    precision: str = "fp32",
) -> ProbeResult:
    """Fit MASC subspaces at every probed layer of ``model`` and score them on every split.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier; put in ``eval()`` mode for the probe and restored afterwards.
    train_loader : iterable of (x, y) or (x, y, y_true)
        Training batches. ``y`` are the labels the model was trained on ("corrupted");
        with ``y_true`` the true-label subspaces are fitted in the same pass.
    eval_loaders : mapping of split name to iterable of (x, y_true), optional
        E.g. ``{"test": test_loader}``.
    layers : list of module names, mapping display name → module name, or None
        ``None`` uses ``model.masc_layers`` if present, else the input, every ``nn.Flatten``
        and every ReLU after a Linear. ``"input"`` names the model input.
    num_classes : int, optional
        K; defaults to the width of the model's output.
    variance : float, default 0.99
        Explained-variance threshold t (a whole number >= 1 = components per class).
    device : torch.device or str, optional
        Where the model runs and the subspaces live; defaults to the model's device.
    backend : {"auto", "torch", "cpp", "triton", "reference"}
        Scoring/accumulation backend; the one that ran is in ``ProbeResult.backend``.
    progress : bool, default True
        Show tqdm progress bars.
    accumulate_dtype : torch.dtype, default torch.float64
        Gram accumulation dtype.
    eigensolver : {"auto", "exact", "partial"}
        See :mod:`masc_fast.eigensolvers`.
    precision : {"fp32", "tf32", "tf32x3", "bf16"}
        Products of the scoring GEMM (:data:`masc_fast.backends.PRECISIONS`); the reduced modes
        are for GPUs (triton, torch backends).

    Returns
    -------
    ProbeResult
        Tidy accuracy table, per-class component counts, model accuracies and the subspaces.

    Raises
    ------
    ValueError
        NaN/Inf activations (naming layer and batch), labels outside ``[0, K)``, malformed
        batches, unknown layer names.

    Notes
    -----
    Memory: ``K · d² · 8`` bytes per layer and label set for the Grams (freed after the fit),
    plus the fitted bases. Work: one forward pass to fit, one per split to score.

    Example
    -------
    >>> result = masc_fast.probe(model, train_loader, {"test": test_loader})  # doctest: +SKIP
    >>> result.best_layer(split="test")  # doctest: +SKIP
    """
    variance = check_variance(variance)
    check_precision(precision)
    device = torch.device(device) if device is not None else _model_device(model)
    select_backend(backend, device)  # an explicit backend that cannot run fails here, early
    selected = resolve_layers(model, layers)
    was_training = model.training
    model.eval().to(device)
    tap = ActivationTap(model, selected)
    started = time.perf_counter()
    try:
        with tap.attached():
            subspaces, model_counter, dims, fit_backends = _fit_pass(
                tap,
                train_loader,
                num_classes,
                variance,
                device,
                backend,
                progress,
                accumulate_dtype,
                eigensolver,
            )
            fitted = time.perf_counter()
            num_classes = next(iter(subspaces.values())).num_classes
            splits = {"train": train_loader, **dict(eval_loaders or {})}
            scoring = _Scoring(backend, precision, set())
            scores, zero_rows = _score_passes(
                tap, splits, subspaces, num_classes, device, scoring, progress, model_counter
            )
    finally:
        model.train(was_training)
    return ProbeResult.from_counts(
        layers=list(selected),
        dims=dims,
        subspaces=subspaces,
        score_counter=scores,
        zero_rows=zero_rows,
        model_counter=model_counter,
        backend=_backends_that_ran(fit_backends, scoring.ran),
        variance=variance,
        fit_seconds=fitted - started,
        score_seconds=time.perf_counter() - fitted,
    )


def _fit_pass(tap, loader, num_classes, variance, device, backend, progress, dtype, eigensolver):
    accumulators: dict[tuple[str, str], GramAccumulator] = {}
    model_counter = _Counter()
    dims: dict[str, int] = {}
    for index, batch in enumerate(tqdm(loader, desc="probe: fit pass", disable=not progress)):
        x, y, y_true = _unpack(batch, index, train=True)
        output, activations = tap.forward(as_tensor(x, "x", device=device))
        if num_classes is None:
            if output.ndim != 2:
                raise ValueError(f"model output has shape {tuple(output.shape)}; pass num_classes=")
            num_classes = output.shape[1]
        label_sets = {CORRUPTED: _labels(y, num_classes, output.shape[0], index, "labels", device)}
        if y_true is not None:
            label_sets[TRUE] = _labels(
                y_true, num_classes, output.shape[0], index, "true labels", device
            )
        if output.ndim == 2 and output.shape[1] == num_classes:
            predicted = output.argmax(dim=1)
            for name, labels in label_sets.items():
                model_counter.add(("train", name), predicted, labels)
        for layer, act in activations.items():
            if layer not in dims:
                dims[layer] = act.shape[1]
            check_activations(act, layer=layer, batch=index, dim=dims[layer])
            for name, labels in label_sets.items():
                key = (layer, name)
                if key not in accumulators:
                    if index > 0:
                        raise ValueError(
                            f"{where(layer, index)}'{name}' labels appear only from "
                            f"this batch on; give every batch the same fields"
                        )
                    accumulators[key] = GramAccumulator(
                        num_classes,
                        dims[layer],
                        device=device,
                        dtype=dtype,
                        backend=backend,
                        layer=layer,
                    )
                accumulators[key].update(act, labels)
    if not accumulators:
        raise ValueError("the training loader yielded no batches")
    subspaces = {}
    fit_backends = {accumulator.backend for accumulator in accumulators.values()}
    for key in list(accumulators):
        subspaces[key] = accumulators.pop(key).fit(variance, method=eigensolver)
    return subspaces, model_counter, dims, fit_backends


def _backends_that_ran(fit_backends: set[str], score_backends: set[str]) -> str:
    """One name when one backend ran everything, else which ran each op."""
    if len(fit_backends | score_backends) == 1:
        return next(iter(fit_backends | score_backends))
    return (
        f"gram_update={'+'.join(sorted(fit_backends))}, "
        f"subspace_scores={'+'.join(sorted(score_backends))}"
    )


@dataclass(frozen=True)
class _Scoring:
    backend: str | None
    precision: str
    ran: set  # backends that scored a batch, filled as the passes go


def _score_passes(tap, splits, subspaces, num_classes, device, scoring, progress, model_counter):
    counter = _Counter()
    zero_rows: dict[tuple[str, str], int] = {}
    for split, loader in splits.items():
        is_train = split == "train"
        for index, batch in enumerate(
            tqdm(loader, desc=f"probe: score {split}", disable=not progress)
        ):
            x, y, y_true = _unpack(batch, index, train=is_train)
            output, activations = tap.forward(as_tensor(x, "x", device=device))
            n = output.shape[0]
            if is_train:
                label_sets = {CORRUPTED: _labels(y, num_classes, n, index, "labels", device)}
                if y_true is not None:
                    label_sets[TRUE] = _labels(y_true, num_classes, n, index, "true labels", device)
            else:
                label_sets = {TRUE: _labels(y, num_classes, n, index, "labels", device)}
                if output.ndim == 2 and output.shape[1] == num_classes:
                    model_counter.add((split, TRUE), output.argmax(dim=1), label_sets[TRUE])
            for layer, act in activations.items():
                zero = int((~act.any(dim=1)).sum())
                zero_rows[(layer, split)] = zero_rows.get((layer, split), 0) + zero
            for (layer, fitted_on), fitted in subspaces.items():
                result = fitted.score(
                    activations[layer],
                    backend=scoring.backend,
                    batch=index,
                    precision=scoring.precision,
                )
                scoring.ran.add(result.backend)
                for name, labels in label_sets.items():
                    counter.add((layer, fitted_on, split, name), result.pred, labels)
    return counter, zero_rows
