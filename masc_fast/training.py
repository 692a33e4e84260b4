"""The authors' training loop: train until the running train accuracy hits a target (SPEC §4).

Cross-entropy, no weight decay, no schedule, no augmentation. Each epoch walks the training
loader once in train mode, counting how many samples the model got right *before* each step
(the running accuracy, as the authors measured it; the weights change during the epoch), then
optionally evaluates on a second loader in eval mode. Training stops at the end of the first
epoch whose running accuracy reaches the target, or after ``max_epochs``.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["EpochStats", "TrainHistory", "evaluate", "make_optimizer", "train_epoch", "train_until"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainHistory:
    """What :func:`train_until` did, epoch by epoch.

    Attributes
    ----------
    epoch : list of int
        1-based epoch numbers, ``[1, 2, ..., epochs]``.
    train_loss : list of float
        Mean cross-entropy over each epoch's training batches (running, like the accuracy).
    train_accuracy : list of float
        Running accuracy in [0, 1] on the labels the training loader yields, per epoch.
    test_accuracy : list of float or None
        Eval-mode accuracy in [0, 1] on ``eval_loader`` after each epoch; ``None`` when no
        ``eval_loader`` was given.
    epochs : int
        Number of epochs run.
    reached_target : bool
        Whether the last epoch's running train accuracy reached ``target_accuracy``.
    seconds : float
        Wall-clock time of the whole call.
    """

    epoch: list[int]
    train_loss: list[float]
    train_accuracy: list[float]
    test_accuracy: list[float] | None
    epochs: int
    reached_target: bool
    seconds: float

    @property
    def final_train_accuracy(self) -> float:
        """Running train accuracy of the last epoch (NaN if no epoch ran)."""
        return self.train_accuracy[-1] if self.train_accuracy else float("nan")

    @property
    def final_test_accuracy(self) -> float | None:
        """Test accuracy after the last epoch, or ``None`` without an ``eval_loader``."""
        if self.test_accuracy is None:
            return None
        return self.test_accuracy[-1] if self.test_accuracy else float("nan")


def make_optimizer(
    name: str, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The authors' optimisers by name: ``"sgd"`` (with momentum) or ``"adam"``.

    Parameters
    ----------
    name : {"sgd", "adam"}
        Case-insensitive. ``"sgd"`` is ``torch.optim.SGD(params, lr, momentum=momentum)``;
        ``"adam"`` is ``torch.optim.Adam(params, lr)`` with default betas (0.9, 0.999) and
        ignores ``momentum``. Neither uses weight decay (SPEC §4).
    params : iterable of torch.nn.Parameter
        Usually ``model.parameters()``.
    lr : float
        Learning rate, > 0. The authors used 1e-3 for SGD (MLP, ResNet18) and 1e-4 or 2e-4
        for Adam (AlexNet, CNN).
    momentum : float, default 0.9
        SGD momentum in [0, 1).

    Returns
    -------
    torch.optim.Optimizer

    Raises
    ------
    ValueError
        If ``name`` is unknown, ``lr <= 0`` or ``momentum`` is outside [0, 1).

    Examples
    --------
    >>> from torch import nn
    >>> make_optimizer("sgd", nn.Linear(3, 2).parameters(), lr=1e-3).defaults["momentum"]
    0.9
    """
    key = str(name).lower()
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {_OPTIMIZERS}")
    if not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if key == "adam":
        return torch.optim.Adam(params, lr=lr)
    if not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def _model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def _accuracy(model: nn.Module, loader, device: torch.device) -> float:
    """Eval-mode accuracy against each batch's last element (``y``, or ``y_true`` if present)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    for batch in loader:
        inputs, labels = batch[0].to(device), batch[-1].to(device)
        correct += (model(inputs).argmax(dim=1) == labels).sum()
        total += labels.shape[0]
    if total == 0:
        raise ValueError("eval_loader yielded no samples")
    return correct.item() / total


@dataclass(frozen=True)
class EpochStats:
    """One pass over a loader: mean loss and accuracies against both label sets.

    Attributes
    ----------
    loss : float
        Mean cross-entropy against the training labels ``y`` over all samples.
    accuracy : float
        Fraction of samples with ``argmax logits == y``, in [0, 1].
    accuracy_true : float or None
        Fraction with ``argmax logits == y_true`` when the loader yields ``(x, y, y_true)``;
        ``None`` for ``(x, y)`` batches.
    samples : int
        Number of samples seen.
    seconds : float
        Wall-clock time of the pass.
    """

    loss: float
    accuracy: float
    accuracy_true: float | None
    samples: int
    seconds: float


def _batch_bar(loader, progress: bool, description: str):
    total = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(
        loader, desc=description, total=total, unit="batch", leave=False, disable=not progress
    )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device | str | None = None,
    criterion: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    description: str = "batches",
) -> EpochStats:
    """One training epoch in train mode, with the authors' running accuracy.

    For each batch ``(x, y[, y_true])``: ``loss = CE(model(x), y)``, backward, optimiser
    step; the logits from *before* the step are counted against ``y`` and, when present,
    against ``y_true`` (so both running accuracies come from the same pass).

    Parameters
    ----------
    model : torch.nn.Module
        Put in train mode and trained in place (may be a ``torch.compile`` wrapper).
    loader : iterable of tuples
        ``(x, y)`` or ``(x, y, y_true)`` batches; ``y`` and ``y_true`` int64 of shape
        ``(batch,)``.
    optimizer : torch.optim.Optimizer
    device : torch.device or str, optional
        Where batches go; defaults to the device of the model's parameters.
    criterion : torch.nn.Module, optional
        Defaults to ``nn.CrossEntropyLoss()`` (mean over the batch).
    autocast_dtype : torch.dtype, optional
        Run forward and loss under ``torch.autocast(device.type, dtype)``, e.g.
        ``torch.bfloat16`` on CUDA. ``None`` (default): full precision.
    progress : bool, default False
        A transient tqdm bar over the batches.
    description : str, default "batches"
        Label of that bar.

    Returns
    -------
    EpochStats

    Raises
    ------
    ValueError
        If the loader yields no samples.

    Notes
    -----
    Counts are accumulated on the device and read once at the end, so there is no host
    synchronisation per batch.

    Examples
    --------
    >>> import torch
    >>> from masc_fast.datasets import labelled_loader
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 2)
    >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    >>> stats = train_epoch(model, labelled_loader(x, y, y, batch_size=4),
    ...                     torch.optim.SGD(model.parameters(), lr=0.1))
    >>> stats.samples, stats.accuracy == stats.accuracy_true
    (8, True)
    """
    start = time.perf_counter()
    device = _model_device(model) if device is None else torch.device(device)
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    model.train()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    correct_true = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    total = 0
    has_true = False
    for batch in _batch_bar(loader, progress, description):
        inputs, labels = batch[0].to(device), batch[1].to(device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, autocast_dtype):
            logits = model(inputs)
            loss = criterion(logits, labels)
        loss.backward()
        optimizer.step()
        predicted = logits.detach().argmax(dim=1)
        correct += (predicted == labels).sum()
        if len(batch) > 2:
            has_true = True
            correct_true += (predicted == batch[2].to(device)).sum()
        loss_sum += loss.detach().float() * labels.shape[0]
        total += labels.shape[0]
    if total == 0:
        raise ValueError("the training loader yielded no samples")
    return EpochStats(
        loss=loss_sum.item() / total,
        accuracy=correct.item() / total,
        accuracy_true=correct_true.item() / total if has_true else None,
        samples=total,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    device: torch.device | str | None = None,
    criterion: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    description: str = "eval",
) -> EpochStats:
    """Eval-mode loss and accuracies on a loader, without gradients.

    Same batches and fields as :func:`train_epoch` (``loss`` and ``accuracy`` against ``y``,
    ``accuracy_true`` against ``y_true`` when batches carry it), but the model is in eval mode
    and nothing is updated. The model's train/eval mode is restored afterwards.

    Parameters
    ----------
    model : torch.nn.Module
    loader : iterable of tuples
        ``(x, y)`` or ``(x, y, y_true)`` batches.
    device, criterion, autocast_dtype, progress, description
        As in :func:`train_epoch`.

    Returns
    -------
    EpochStats

    Raises
    ------
    ValueError
        If the loader yields no samples.

    Examples
    --------
    >>> import torch
    >>> from masc_fast.datasets import labelled_loader
    >>> model = torch.nn.Linear(4, 2)
    >>> x = torch.randn(6, 4)
    >>> y = model(x).argmax(dim=1)
    >>> evaluate(model, labelled_loader(x, y, batch_size=4)).accuracy
    1.0
    """
    start = time.perf_counter()
    device = _model_device(model) if device is None else torch.device(device)
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    correct_true = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    total = 0
    has_true = False
    try:
        for batch in _batch_bar(loader, progress, description):
            inputs, labels = batch[0].to(device), batch[1].to(device)
            with _autocast(device, autocast_dtype):
                logits = model(inputs)
                loss = criterion(logits, labels)
            predicted = logits.argmax(dim=1)
            correct += (predicted == labels).sum()
            if len(batch) > 2:
                has_true = True
                correct_true += (predicted == batch[2].to(device)).sum()
            loss_sum += loss.float() * labels.shape[0]
            total += labels.shape[0]
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("the evaluation loader yielded no samples")
    return EpochStats(
        loss=loss_sum.item() / total,
        accuracy=correct.item() / total,
        accuracy_true=correct_true.item() / total if has_true else None,
        samples=total,
        seconds=time.perf_counter() - start,
    )


def train_until(
    model: nn.Module,
    loader,
    *,
    optimizer: torch.optim.Optimizer,
    target_accuracy: float = 1.0,
    max_epochs: int = 500,
    eval_loader=None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TrainHistory:
    """Train with cross-entropy until the running train accuracy reaches a target.

    Per epoch ``e``: for each batch ``(x, y[, y_true])`` of ``loader``, in train mode,
    ``loss = CE(model(x), y)``, step the optimiser, and count ``argmax model(x) == y`` with the
    logits from *before* the step; ``acc_e = correct / n``. Then, if ``eval_loader`` is given,
    evaluate accuracy in eval mode under ``no_grad``. Stop after the first epoch with
    ``acc_e >= target_accuracy``, or after ``max_epochs``. ``y_true`` is ignored: the model
    trains on the (possibly corrupted) labels, as in the paper.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch of inputs to logits ``(batch, num_classes)``. Trained in place.
    loader : iterable of tuples
        Training batches ``(x, y)`` or ``(x, y, y_true)`` (see
        :func:`masc_fast.datasets.labelled_loader`); ``y`` int64 of shape ``(batch,)``.
        Iterated once per epoch, so a shuffling ``DataLoader`` reshuffles every epoch.
    optimizer : torch.optim.Optimizer
        Over ``model``'s parameters; see :func:`make_optimizer`.
    target_accuracy : float, default 1.0
        Stop threshold in (0, 1] on the running train accuracy (the authors used 1.0, 0.999
        or 0.991 depending on the dataset).
    max_epochs : int, default 500
        Epoch cap.
    eval_loader : iterable of tuples, optional
        Evaluation batches ``(x, y)`` or ``(x, y, y_true)``; accuracy is measured against the
        last element, so against ``y_true`` when it is there (the convention of the probe's
        scoring splits).
    device : torch.device or str, optional
        Where batches are moved; defaults to the device of the model's parameters. The model
        itself is not moved.
    progress : bool, default True
        Show a tqdm bar over epochs with the current train and test accuracy.

    Returns
    -------
    TrainHistory
        Per-epoch losses and accuracies, the number of epochs, whether the target was reached,
        and the wall-clock time.

    Raises
    ------
    ValueError
        If ``target_accuracy`` is outside (0, 1], ``max_epochs < 1``, or a loader yields no
        samples.

    Notes
    -----
    Cost per epoch is one forward and backward pass over the training set plus one forward
    pass over the evaluation set. Correct counts are accumulated on the device and read once
    per epoch, so there is no host synchronisation per batch. The model is left in the
    train/eval mode it had on entry.

    Examples
    --------
    >>> import torch
    >>> from masc_fast.datasets import labelled_loader
    >>> from masc_fast.models import MLP
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    >>> model = MLP(8, 3, hidden=(64,))
    >>> history = train_until(
    ...     model,
    ...     labelled_loader(x, y, batch_size=16),
    ...     optimizer=make_optimizer("adam", model.parameters(), lr=1e-2),
    ...     max_epochs=200,
    ...     progress=False,
    ... )
    >>> history.reached_target
    True
    """
    if not isinstance(target_accuracy, numbers.Real) or not 0 < target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy!r}")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, numbers.Integral):
        raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}")
    device = _model_device(model) if device is None else torch.device(device)
    criterion = nn.CrossEntropyLoss()
    was_training = model.training

    epochs: list[int] = []
    losses: list[float] = []
    train_accuracy: list[float] = []
    test_accuracy: list[float] | None = None if eval_loader is None else []
    reached = False
    start = time.perf_counter()
    bar = tqdm(range(1, max_epochs + 1), desc="train", unit="epoch", disable=not progress)
    try:
        for epoch in bar:
            stats = train_epoch(model, loader, optimizer, device=device, criterion=criterion)
            epochs.append(epoch)
            train_accuracy.append(stats.accuracy)
            losses.append(stats.loss)
            postfix = {"loss": f"{losses[-1]:.4f}", "train": f"{train_accuracy[-1]:.4f}"}
            if test_accuracy is not None:
                test_accuracy.append(_accuracy(model, eval_loader, device))
                postfix["test"] = f"{test_accuracy[-1]:.4f}"
            bar.set_postfix(postfix, refresh=False)
            logger.debug("epoch %d: %s", epoch, postfix)
            if train_accuracy[-1] >= target_accuracy:
                reached = True
                break
    finally:
        bar.close()
        model.train(was_training)

    seconds = time.perf_counter() - start
    logger.info(
        "%s after %d epoch(s) in %.1f s: train accuracy %.4f%s",
        "reached the target" if reached else "stopped at the epoch cap",
        len(epochs),
        seconds,
        train_accuracy[-1],
        "" if not test_accuracy else f", test accuracy {test_accuracy[-1]:.4f}",
    )
    return TrainHistory(
        epoch=epochs,
        train_loss=losses,
        train_accuracy=train_accuracy,
        test_accuracy=test_accuracy,
        epochs=len(epochs),
        reached_target=reached,
        seconds=seconds,
    )
