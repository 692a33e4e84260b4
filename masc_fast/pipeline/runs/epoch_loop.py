"""The resumable epoch loop of a training run: train a built model into its run directory.

:func:`train_prepared` takes a model, its loaders and labels, and trains by SPEC §4
(cross-entropy; stop at the end of the first epoch whose running train accuracy on the
corrupted labels reaches the recipe's target, or at the cap), committing every epoch to the
run directory (layout in :mod:`masc_fast.pipeline.runs.train`, files in :mod:`masc_fast.pipeline.runs.files`) so a
kill at any instant loses at most the epoch in progress. :func:`masc_fast.pipeline.runs.train.train_run`
builds its arguments from a :class:`~masc_fast.pipeline.runs.config.RunConfig`.
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

from masc_fast._io import atomic_write_text
from masc_fast.pipeline.runs.checkpoints import load_checkpoint, save_checkpoint
from masc_fast.pipeline.runs.config import RunSummary
from masc_fast.pipeline.runs.files import (
    check_labels,
    check_run_dir,
    epoch_path,
    remove_stale_tmp,
    run_paths,
    save_snapshot,
    write_labels,
    write_metrics,
    write_setup,
)
from masc_fast.pipeline.runs.loading import resolve_device
from masc_fast.pipeline.runs.passes import evaluate, train_epoch
from masc_fast.pipeline.runs.recipes import TrainingRecipe
from masc_fast.pipeline.runs.training import make_optimizer

__all__ = ["train_device", "train_prepared"]

logger = logging.getLogger(__name__)


def _row(epoch: int, stats, test, seconds: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "train_accuracy_true": stats.accuracy_true,
        "test_accuracy": test.accuracy,
        "seconds": seconds,
    }


def train_device(device: torch.device | str | None, amp: bool) -> torch.device:
    """Where a run trains (``None``: CUDA when present, else the CPU).

    Raises
    ------
    ValueError
        If ``amp`` (bf16 autocast) is asked for on a device that is not CUDA.
    """
    device = resolve_device(device)
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

    device = train_device(device, amp)
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
        save_snapshot(paths["init"], model, epoch=0, kind="init", metrics=rows[0])
        write_metrics(paths["metrics"], rows)
        epoch, best_epoch, best_test = 0, None, None

    def commit_derived():
        """Periodic and best checkpoints and metrics.csv of the epoch held in ``last``."""
        row = rows[-1]
        if epoch % checkpoint_every == 0:
            save_snapshot(epoch_path(run_dir, epoch), model, epoch=epoch, kind="epoch", metrics=row)
        if best_epoch == epoch:
            save_snapshot(paths["best"], model, epoch=epoch, kind="best", metrics=row)
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

    save_snapshot(paths["final"], model, epoch=epoch, kind="final", metrics=rows[-1])
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
