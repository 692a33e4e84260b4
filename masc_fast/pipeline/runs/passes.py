"""One pass over a loader: a training epoch or an evaluation, with the authors' accuracies.

Batches are ``(x, y)`` or ``(x, y, y_true)``. A training epoch (:func:`train_epoch`) steps the
optimiser on ``CE(model(x), y)`` in train mode and counts the predictions from *before* each
step (the running accuracy, as the authors measured it); an evaluation (:func:`evaluate`) does
the same forward passes in eval mode without gradients. Both return :class:`EpochStats`, with
the accuracy against ``y_true`` too when the batches carry it. :mod:`masc_fast.pipeline.runs.training`
loops over epochs with them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import nn

from masc_fast._progress import progress_bar
from masc_fast.activations import model_device

__all__ = ["EpochStats", "evaluate", "train_epoch"]


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
    step_losses : tuple of float
        A training pass's mean loss of each batch, in order (the learning curve Zhang et al.
        plot against steps); empty for an evaluation.
    """

    loss: float
    accuracy: float
    accuracy_true: float | None
    samples: int
    seconds: float
    step_losses: tuple[float, ...] = ()


def _batch_bar(loader, progress: bool, description: str):
    total = len(loader) if hasattr(loader, "__len__") else None
    return progress_bar(
        loader, desc=description, total=total, unit="batch", leave=False, disable=not progress
    )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _step(model, batch, optimizer, criterion, *, device, autocast_dtype, input_noise, scale=1.0):
    """One batch: the forward pass (inputs plus Gaussian noise of ``input_noise``), and with an
    optimiser the backward pass of ``loss · scale`` and a step; ``(logits, labels, loss)``
    detached."""
    inputs, labels = batch[0].to(device), batch[1].to(device)
    if input_noise:
        inputs = inputs + input_noise * torch.randn_like(inputs)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    with _autocast(device, autocast_dtype):
        logits = model(inputs)
        loss = criterion(logits, labels)
    if optimizer is not None:
        (loss if scale == 1.0 else loss * scale).backward()
        optimizer.step()
    return logits.detach(), labels, loss.detach()


def _run_pass(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer | None,
    *,
    device: torch.device | str | None,
    criterion: nn.Module | None,
    autocast_dtype: torch.dtype | None,
    progress: bool,
    description: str,
    input_noise: float = 0.0,
    group=None,
) -> EpochStats:
    """The loop of :func:`train_epoch` (with an optimizer) and :func:`evaluate` (without);
    the model's train/eval mode is the caller's business. With ``group`` the loop runs this
    rank's part of every batch (:class:`~masc_fast.data.BatchLoader` with ``rank``) and the
    counts are summed over the ranks."""
    if group is not None:
        return _run_rank_pass(
            model,
            loader,
            optimizer,
            device=device,
            autocast_dtype=autocast_dtype,
            progress=progress,
            description=description,
            input_noise=input_noise,
            group=group,
        )
    start = time.perf_counter()
    device = model_device(model) if device is None else torch.device(device)
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    correct = torch.zeros((), dtype=torch.int64, device=device)
    correct_true = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    step_losses = []  # 0-d tensors on the device, read once at the end
    total = 0
    has_true = False
    options = {"device": device, "autocast_dtype": autocast_dtype, "input_noise": input_noise}
    for batch in _batch_bar(loader, progress, description):
        logits, labels, loss = _step(model, batch, optimizer, criterion, **options)
        if optimizer is not None:
            step_losses.append(loss.float())
        predicted = logits.argmax(dim=1)
        correct += (predicted == labels).sum()
        if len(batch) > 2:
            has_true = True
            correct_true += (predicted == batch[2].to(device)).sum()
        loss_sum += loss.float() * labels.shape[0]
        total += labels.shape[0]
    if total == 0:
        what = "evaluation" if optimizer is None else "training"
        raise ValueError(f"the {what} loader yielded no samples")
    return EpochStats(
        loss=loss_sum.item() / total,
        accuracy=correct.item() / total,
        accuracy_true=correct_true.item() / total if has_true else None,
        samples=total,
        seconds=time.perf_counter() - start,
        step_losses=tuple(torch.stack(step_losses).tolist()) if step_losses else (),
    )


def _run_rank_pass(
    model, loader, optimizer, *, device, autocast_dtype, progress, description, input_noise, group
) -> EpochStats:
    """One rank's part of a distributed pass, whose statistics are those of one process.

    Each step's loss is this rank's summed cross-entropy times ``world_size / B`` (``B`` the
    step's rows over all ranks, :meth:`~masc_fast.data.BatchLoader.global_rows`), so the
    gradient DistributedDataParallel averages is the mean over the whole batch, as in one
    process; a rank without rows in a last batch joins (``model.join()``). Loss sums,
    counts and per-step losses are summed over the ranks at the end.
    """
    start = time.perf_counter()
    module = getattr(model, "module", model)
    device = model_device(module) if device is None else torch.device(device)
    global_rows = loader.global_rows()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct, true, rows
    step_sums = torch.zeros(len(global_rows), dtype=torch.float64, device=device)
    has_true = torch.zeros(1, dtype=torch.float64, device=device)
    join = model.join() if optimizer is not None and hasattr(model, "join") else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(group.step(f"{description}: a step's collectives"))
        if join is not None:
            stack.enter_context(join)
        options = {"device": device, "autocast_dtype": autocast_dtype, "input_noise": input_noise}
        for step, batch in enumerate(_batch_bar(loader, progress, description)):
            scale = group.size / global_rows[step]
            logits, labels, loss = _step(model, batch, optimizer, criterion, scale=scale, **options)
            if optimizer is not None:
                step_sums[step] = loss.double()
            predicted = logits.argmax(dim=1)
            sums[0] += loss.double()
            sums[1] += (predicted == labels).sum()
            if len(batch) > 2:
                has_true[0] = 1
                sums[2] += (predicted == batch[2].to(device)).sum()
            sums[3] += labels.shape[0]
    what = f"{description}: summing the statistics"
    group.sum(sums, what)
    group.sum(step_sums, what)
    group.sum(has_true, what)
    loss_sum, correct, correct_true, total = sums.tolist()
    if total == 0:
        kind = "evaluation" if optimizer is None else "training"
        raise ValueError(f"the {kind} loaders of every rank yielded no samples")
    steps = (step_sums / torch.tensor(global_rows, dtype=torch.float64, device=device)).tolist()
    return EpochStats(
        loss=loss_sum / total,
        accuracy=correct / total,
        accuracy_true=correct_true / total if has_true.item() else None,
        samples=int(total),
        seconds=time.perf_counter() - start,
        step_losses=tuple(steps) if optimizer is not None else (),
    )


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
    input_noise: float = 0.0,
    group=None,
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
        A transient progress bar over the batches.
    description : str, default "batches"
        Label of that bar.
    input_noise : float, default 0
        Standard deviation of Gaussian noise added to every batch's inputs before the
        forward pass (Arpit et al.'s input-noise regulariser; torch's global generator).
    group : masc_fast.probing.distributed.RankGroup, optional
        Train this rank's part of every batch (``model`` wrapped in
        DistributedDataParallel, ``loader`` a :class:`~masc_fast.data.BatchLoader` with
        ``rank``); the statistics are those of all ranks.

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
    >>> from masc_fast.data.in_memory import labelled_loader
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 2)
    >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    >>> stats = train_epoch(model, labelled_loader(x, y, y, batch_size=4),
    ...                     torch.optim.SGD(model.parameters(), lr=0.1))
    >>> stats.samples, stats.accuracy == stats.accuracy_true
    (8, True)
    """
    model.train()
    options = {"device": device, "criterion": criterion, "autocast_dtype": autocast_dtype}
    return _run_pass(
        model,
        loader,
        optimizer,
        progress=progress,
        description=description,
        input_noise=input_noise,
        group=group,
        **options,
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
    group=None,
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
    device, criterion, autocast_dtype, progress, description, group
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
    >>> from masc_fast.data.in_memory import labelled_loader
    >>> model = torch.nn.Linear(4, 2)
    >>> x = torch.randn(6, 4)
    >>> y = model(x).argmax(dim=1)
    >>> evaluate(model, labelled_loader(x, y, batch_size=4)).accuracy
    1.0
    """
    was_training = model.training
    model.eval()
    options = {"device": device, "criterion": criterion, "autocast_dtype": autocast_dtype}
    try:
        return _run_pass(
            model, loader, None, progress=progress, description=description, group=group, **options
        )
    finally:
        model.train(was_training)
