"""Training runs with the paper's recipes: one directory per run, resumable after a kill.

:func:`train_run` resolves a :class:`RunConfig` (model and dataset names, corruption degree,
seed) into a model, data and noisy labels and hands them to :func:`train_prepared`, which
trains by SPEC §4 (cross-entropy; stop at the end of the first epoch whose running train
accuracy on the corrupted labels reaches the recipe's target, or at the cap) and keeps the run
directory up to date after every epoch.

Run directory
-------------
::

    <run_dir>/
      config.json            RunConfig.to_dict(); its presence marks a run directory
      recipe.json            {"format", "recipe": the resolved TrainingRecipe, "masc_fast",
                             "torch"}: versions that ran it; checked on resume
      labels.npz             arrays true and corrupted (int64, training set, dataset order)
                             and scalars p, recipe, seed, strict; written before epoch 1,
                             verified on resume
      metrics.csv            epoch, train_loss, train_accuracy, train_accuracy_true,
                             test_accuracy, seconds; one row per epoch (1-based) plus row 0,
                             the initialised model; rewritten atomically after every epoch
      checkpoints/
        init.safetensors     the initialised model, before any step (random-init control)
        epoch_0010.safetensors ...  every ``checkpoint_every`` epochs
        last.safetensors     after every epoch: model, optimizer, RNG states, metrics so far,
                             best so far; what ``resume`` continues from
        best.safetensors     highest test accuracy over epochs >= 1 (first on ties), its epoch
                             in the metadata (the early-stopping comparison)
        final.safetensors    the model when training stopped
      summary.json           written when the run is finished (see :class:`RunSummary`)

``train_accuracy`` and ``train_accuracy_true`` are running accuracies of the same training
pass (weights change during the epoch) against the corrupted and the true labels;
``test_accuracy`` is measured in eval mode on the true test labels; ``seconds`` is the wall
time of the epoch's training pass and test evaluation. Row 0 holds eval-mode accuracies (and
loss) of the initialised model, as the authors' MLP CSVs do. Every file is
written atomically (temporary file, then ``os.replace``). ``last.safetensors`` is the commit
point of an epoch; the periodic and best checkpoints and ``metrics.csv`` are derived from it
and are rewritten on resume, so a kill at any instant loses at most the epoch in progress.
All checkpoints except ``last`` hold the model only (see :mod:`masc_fast.checkpoints`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._io import atomic_write_text
from .checkpoints import load_checkpoint, save_checkpoint
from .recipes import TrainingRecipe
from .run_config import RunConfig, RunSummary
from .run_files import (
    METRIC_COLUMNS,
    check_labels,
    check_run_dir,
    epoch_path,
    remove_stale_tmp,
    run_paths,
    write_labels,
    write_metrics,
    write_setup,
)
from .training import evaluate, make_optimizer, train_epoch

__all__ = ["METRIC_COLUMNS", "RunConfig", "RunSummary", "train_prepared", "train_run"]

logger = logging.getLogger(__name__)

#: Batch size of the evaluation passes (no gradients, so larger than any training batch).
_EVAL_BATCH_SIZE = 512


def _row(epoch: int, stats, test, seconds: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "train_accuracy_true": stats.accuracy_true,
        "test_accuracy": test.accuracy,
        "seconds": seconds,
    }


def _resolve_device(device, amp: bool) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if amp and device.type != "cuda":
        raise ValueError(f"amp=True (bf16 autocast) needs a CUDA device, got device {device}")
    return device


def _as_label_array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def train_prepared(
    model: nn.Module,
    run_dir: str | os.PathLike,
    *,
    train_loader,
    test_loader,
    true_labels,
    corrupted_labels,
    noise: dict,
    recipe: TrainingRecipe,
    config: dict,
    train_eval_loader=None,
    checkpoint_every: int = 10,
    device: torch.device | str | None = None,
    compile: bool = False,
    amp: bool = False,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunSummary:
    """Train an already built model into a run directory (the core of :func:`train_run`).

    Parameters
    ----------
    model : torch.nn.Module
        Freshly initialised; moved to ``device`` and trained in place. On resume its weights
        are replaced by the checkpoint's.
    run_dir : str or os.PathLike
        The run directory (layout in the module docstring).
    train_loader : iterable of (x, y, y_true)
        Training batches, ``y`` the corrupted and ``y_true`` the true labels. If it has
        ``set_epoch``, it is called with the 1-based epoch before each epoch (a
        :class:`masc_fast.data.BatchLoader` then shuffles reproducibly per epoch).
    test_loader : iterable of (x, y)
        Test batches with true labels.
    true_labels, corrupted_labels : array_like of int, shape (n_train,)
        The label vectors the loaders use, stored in ``labels.npz``.
    noise : dict
        Scalars describing the noise (``p``, ``recipe``, ``seed``, ...), stored beside them.
    recipe : TrainingRecipe
        Optimiser, learning rate, momentum, stop target and cap. (The batch size is the
        loader's; it is recorded here.)
    config : dict
        JSON-ready description of the run for ``config.json``; on resume it must equal the
        stored one except for ``device``, ``data_root`` and ``download``.
    train_eval_loader : iterable of (x, y, y_true), optional
        Used once, for row 0 (eval-mode accuracies of the initialised model); defaults to
        ``train_loader``.
    checkpoint_every : int, default 10
        Write ``checkpoints/epoch_{e:04d}.safetensors`` when ``e % checkpoint_every == 0``.
    device : torch.device or str, optional
        Default: CUDA if available, else the CPU.
    compile : bool, default False
        Train and evaluate through ``torch.compile(model)`` (checkpoints store ``model``).
    amp : bool, default False
        Forward passes under bf16 autocast; CUDA only.
    resume : bool, default False
        Continue the run in ``run_dir`` (see :func:`train_run`).
    progress : bool, default True
        tqdm bars over epochs and over each epoch's batches.
    on_epoch : callable, optional
        Called with a copy of each new metrics row after the epoch is committed.

    Returns
    -------
    RunSummary

    Raises
    ------
    FileExistsError
        If ``run_dir`` is not empty and ``resume`` is false.
    ValueError
        If resuming a directory whose configuration or labels differ, or ``amp`` without CUDA.

    Examples
    --------
    See :func:`train_run`, which builds every argument from a :class:`RunConfig`.
    """
    run_dir = Path(run_dir)
    paths = run_paths(run_dir)
    true_labels = _as_label_array(true_labels, "true_labels")
    corrupted_labels = _as_label_array(corrupted_labels, "corrupted_labels")
    state = check_run_dir(run_dir, config, recipe, resume)
    if state == "finished":
        check_labels(paths["labels"], true_labels, corrupted_labels, noise)
        return RunSummary.from_dict(json.loads(paths["summary"].read_text()))
    remove_stale_tmp(run_dir)

    device = _resolve_device(device, amp)
    model.to(device)
    momentum = 0.0 if recipe.momentum is None else recipe.momentum
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), recipe.lr, momentum)
    forward = torch.compile(model) if compile else model
    autocast = torch.bfloat16 if amp else None
    passes = {"device": device, "autocast_dtype": autocast, "progress": progress}

    if state == "resume" and paths["last"].is_file():
        check_labels(paths["labels"], true_labels, corrupted_labels, noise)
        checkpoint = load_checkpoint(paths["last"], model, optimizer, restore_rng=True)
        epoch, meta = checkpoint.epoch, checkpoint.metadata
        rows, best_epoch, best_test = meta["metrics"], meta["best_epoch"], meta["best_test"]
        logger.info("resuming %s after epoch %d", run_dir, epoch)
    else:
        if state == "resume":  # killed before the first epoch ended: start over
            check_labels(paths["labels"], true_labels, corrupted_labels, noise)
            if paths["init"].is_file():
                load_checkpoint(paths["init"], model)
        write_labels(paths["labels"], true_labels, corrupted_labels, noise)
        write_setup(run_dir, config, recipe)
        started = time.perf_counter()
        eval_loader = train_loader if train_eval_loader is None else train_eval_loader
        initial_train = evaluate(forward, eval_loader, **passes)
        initial_test = evaluate(forward, test_loader, **passes)
        rows = [_row(0, initial_train, initial_test, time.perf_counter() - started)]
        save_checkpoint(
            paths["init"], model, epoch=0, metadata={"kind": "init", "metrics": rows[0]}, rng=False
        )
        write_metrics(paths["metrics"], rows)
        epoch, best_epoch, best_test = 0, None, None

    def commit_derived():
        """Periodic and best checkpoints and metrics.csv of the epoch held in ``last``."""
        row = rows[-1]
        if epoch % checkpoint_every == 0:
            save_checkpoint(
                epoch_path(run_dir, epoch),
                model,
                epoch=epoch,
                metadata={"kind": "epoch", "metrics": row},
                rng=False,
            )
        if best_epoch == epoch:
            save_checkpoint(
                paths["best"],
                model,
                epoch=epoch,
                metadata={"kind": "best", "metrics": row},
                rng=False,
            )
        write_metrics(paths["metrics"], rows)

    def finished() -> bool:
        return epoch >= recipe.max_epochs or (
            epoch > 0 and rows[-1]["train_accuracy"] >= recipe.target_accuracy
        )

    if epoch > 0:
        commit_derived()  # redo what a kill right after the commit may have skipped
    bar = tqdm(
        total=recipe.max_epochs,
        initial=epoch,
        desc=f"train {run_dir.name}",
        unit="epoch",
        disable=not progress,
    )
    try:
        while not finished():
            epoch += 1
            started = time.perf_counter()
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            stats = train_epoch(
                forward, train_loader, optimizer, description=f"epoch {epoch}", **passes
            )
            test = evaluate(forward, test_loader, **passes)
            rows.append(_row(epoch, stats, test, time.perf_counter() - started))
            if best_test is None or test.accuracy > best_test:
                best_epoch, best_test = epoch, test.accuracy
            save_checkpoint(
                paths["last"],
                model,
                optimizer,
                epoch=epoch,
                metadata={"metrics": rows, "best_epoch": best_epoch, "best_test": best_test},
            )
            commit_derived()
            bar.update(1)
            bar.set_postfix(train=f"{stats.accuracy:.4f}", test=f"{test.accuracy:.4f}")
            logger.debug("epoch %d: %s", epoch, rows[-1])
            if on_epoch is not None:
                on_epoch(dict(rows[-1]))
    finally:
        bar.close()

    save_checkpoint(
        paths["final"],
        model,
        epoch=epoch,
        metadata={"kind": "final", "metrics": rows[-1]},
        rng=False,
    )
    last = rows[-1]
    summary = RunSummary(
        epochs=epoch,
        reached_target=last["train_accuracy"] >= recipe.target_accuracy,
        final_train_accuracy=last["train_accuracy"],
        final_train_accuracy_true=last["train_accuracy_true"],
        final_test_accuracy=last["test_accuracy"],
        best_epoch=best_epoch,
        best_test_accuracy=best_test,
        seconds=sum(row["seconds"] for row in rows),
        device=str(device),
        torch_version=torch.__version__,
    )
    atomic_write_text(paths["summary"], json.dumps(summary.to_dict(), indent=2) + "\n")
    logger.info(
        "%s: %s after %d epoch(s); train %.4f, test %.4f (best %.4f at epoch %d)",
        run_dir,
        "reached the target" if summary.reached_target else "stopped at the cap",
        epoch,
        summary.final_train_accuracy,
        summary.final_test_accuracy,
        best_test,
        best_epoch,
    )
    return summary


def _build_model(config: RunConfig, info) -> nn.Module:
    """Seeded model construction (a seam tests replace with a smaller model)."""
    from .models import build_model

    torch.manual_seed(config.seed)
    return build_model(config.model, input_shape=info.input_shape, num_classes=info.num_classes)


def train_run(
    config: RunConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunSummary:
    """Train ``config.model`` on ``config.dataset`` with labels corrupted to degree ``config.p``.

    Loads the data (:func:`masc_fast.data.load_dataset`), draws the noisy training labels
    (:func:`masc_fast.corruption.noisy_labels` with ``config.noise_recipe``, ``config.seed``
    and the dataset's ``strict_corruption``), seeds torch with ``config.seed`` right before
    :func:`masc_fast.models.build_model` (same config, same initial weights), and trains with
    the resolved recipe (:meth:`RunConfig.recipe`) into ``run_dir``. Shuffled epochs follow
    ``BatchLoader.set_epoch(epoch)`` with seed ``config.seed``, so a resumed run continues
    with the orders an uninterrupted run would have used.

    Parameters
    ----------
    config : RunConfig
    run_dir : str or os.PathLike
        Must be empty or absent unless ``resume``. Layout in the module docstring.
    resume : bool, default False
        Continue from ``checkpoints/last.safetensors`` (model, optimizer, epoch, RNG states,
        metrics and best so far); a finished run (``summary.json`` present) is returned as
        is, without training; an empty directory starts a new run.
    progress : bool, default True
        tqdm bars over epochs (train and test accuracy) and over each epoch's batches.
    on_epoch : callable, optional
        Called with each new metrics row (a dict keyed by :data:`METRIC_COLUMNS`).

    Returns
    -------
    RunSummary

    Raises
    ------
    FileExistsError
        If ``run_dir`` is not empty and ``resume`` is false.
    ValueError
        If resuming a run whose configuration or labels differ from these; on an unknown
        model/dataset combination without a full set of recipe overrides.
    FileNotFoundError
        If the dataset is not under ``config.data_root`` and ``config.download`` is false.

    Examples
    --------
    >>> import tempfile
    >>> config = RunConfig("mlp", "digits", p=0.2, max_epochs=1)
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     summary = train_run(config, folder, progress=False)
    >>> summary.epochs  # doctest: +SKIP
    1
    """
    from .corruption import noisy_labels
    from .data import BatchLoader, dataset_info, load_dataset

    run_dir = Path(run_dir)
    recipe = config.recipe()
    if check_run_dir(run_dir, config.to_dict(), recipe, resume) == "finished":
        return RunSummary.from_dict(json.loads(run_paths(run_dir)["summary"].read_text()))

    info = dataset_info(config.dataset)
    train, test = load_dataset(
        config.dataset, root=config.data_root, download=config.download, progress=progress
    )
    true_labels = train.labels.numpy()
    corrupted = noisy_labels(
        true_labels,
        config.p,
        info.num_classes,
        recipe=config.noise_recipe,
        seed=config.seed,
        strict=info.strict_corruption,
    )
    device = _resolve_device(config.device, config.amp)
    model = _build_model(config, info)
    loader_device = device if device.type == "cuda" else None
    train_loader = BatchLoader(
        train,
        corrupted,
        true_labels,
        batch_size=recipe.batch_size,
        shuffle=config.shuffle,
        seed=config.seed,
        device=loader_device,
    )
    eval_size = max(_EVAL_BATCH_SIZE, recipe.batch_size)
    train_eval_loader = BatchLoader(
        train, corrupted, true_labels, batch_size=eval_size, device=loader_device
    )
    test_loader = BatchLoader(test, batch_size=eval_size, device=loader_device)
    noise = {
        "p": config.p,
        "recipe": config.noise_recipe,
        "seed": config.seed,
        "strict": info.strict_corruption,
    }
    return train_prepared(
        model,
        run_dir,
        train_loader=train_loader,
        test_loader=test_loader,
        train_eval_loader=train_eval_loader,
        true_labels=true_labels,
        corrupted_labels=corrupted,
        noise=noise,
        recipe=recipe,
        config=config.to_dict(),
        checkpoint_every=config.checkpoint_every,
        device=device,
        compile=config.compile,
        amp=config.amp,
        resume=resume,
        progress=progress,
        on_epoch=on_epoch,
    )
