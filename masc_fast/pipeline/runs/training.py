"""The authors' training loop in memory: train until the running train accuracy hits a target.

Cross-entropy, no weight decay, no schedule, no augmentation. Each epoch walks the training
loader once in train mode, counting how many samples the model got right *before* each step
(the running accuracy, as the authors measured it; the weights change during the epoch), then
optionally evaluates on a second loader in eval mode. Training stops at the end of the first
epoch whose running accuracy reaches the target, or after ``max_epochs`` (SPEC §4). The epochs
run on the one loop of training runs (:class:`~masc_fast.pipeline.runs.epoch_loop.EpochLoop`),
without files: nothing is written, nothing resumes.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from masc_fast.activations import model_device
from masc_fast.pipeline.runs.epoch_loop import EpochLoop
from masc_fast.pipeline.runs.passes import EpochStats, evaluate, train_epoch

__all__ = ["EpochStats", "TrainHistory", "evaluate", "make_optimizer", "train_epoch", "train_until"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = ("sgd", "adam", "adam-fused")


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
    name: str,
    params: Iterable[nn.Parameter],
    lr: float,
    momentum: float = 0.9,
    *,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """The authors' optimisers by name: ``"sgd"`` (with momentum) or ``"adam"``.

    Parameters
    ----------
    name : {"sgd", "adam", "adam-fused"}
        Case-insensitive. ``"sgd"`` is ``torch.optim.SGD(params, lr, momentum=momentum)``;
        ``"adam"`` is ``torch.optim.Adam(params, lr)`` with default betas (0.9, 0.999) and
        ignores ``momentum``; ``"adam-fused"`` is the same update through torch's fused
        kernel (``fused=True``: one kernel per parameter instead of a dozen small ops; weights
        differ from ``"adam"`` by rounding, about 1e-8 after a step; CPU and CUDA). None uses
        weight decay (SPEC §4).
    params : iterable of torch.nn.Parameter
        Usually ``model.parameters()``.
    lr : float
        Learning rate, > 0. The authors used 1e-3 for SGD (MLP, ResNet18) and 1e-4 or 2e-4
        for Adam (AlexNet, CNN).
    momentum : float, default 0.9
        SGD momentum in [0, 1).
    weight_decay : float, default 0
        L2 penalty (torch's ``weight_decay``); the paper's runs use none, Arpit et al.'s
        regularisation runs do (``RunConfig.regularization``).

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
    if not isinstance(weight_decay, numbers.Real) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if key == "adam-fused":
        return torch.optim.Adam(params, lr=lr, fused=True, weight_decay=weight_decay)
    if not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


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
        :func:`masc_fast.data.in_memory.labelled_loader`); ``y`` int64 of shape ``(batch,)``.
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
        Show a progress bar over epochs with the current train and test accuracy.

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
    >>> from masc_fast.data.in_memory import labelled_loader
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
    device = model_device(model) if device is None else torch.device(device)
    criterion = nn.CrossEntropyLoss()
    was_training = model.training

    def epoch_row(epoch: int) -> dict:
        stats = train_epoch(model, loader, optimizer, device=device, criterion=criterion)
        row = {"epoch": epoch, "loss": stats.loss, "train": stats.accuracy}
        if eval_loader is not None:
            row["test"] = _accuracy(model, eval_loader, device)
        return row

    def reached_target(rows: list[dict], state: dict) -> bool:
        return bool(rows) and rows[-1]["train"] >= target_accuracy

    loop = EpochLoop(model, optimizer, max_epochs=max_epochs, progress=progress)
    loop.start([], {})
    start = time.perf_counter()
    try:
        rows = loop.run(
            epoch_row,
            stop=reached_target,
            postfix=lambda row: {
                key: f"{value:.4f}" for key, value in row.items() if key != "epoch"
            },
        )
    finally:
        model.train(was_training)
    epochs = [row["epoch"] for row in rows]
    losses = [row["loss"] for row in rows]
    train_accuracy = [row["train"] for row in rows]
    test_accuracy = None if eval_loader is None else [row["test"] for row in rows]
    reached = reached_target(rows, {})
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
