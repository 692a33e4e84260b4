"""Train a built model into a run directory by SPEC §4, on the one resumable epoch loop.

:func:`train_prepared` takes a model, its loaders and labels, and trains with cross-entropy
until the end of the first epoch whose running train accuracy on the corrupted labels reaches
the recipe's target, or to the cap, committing every epoch to the run directory through
:class:`~masc_fast.pipeline.runs.epoch_loop.EpochLoop` (layout in
:mod:`masc_fast.pipeline.runs.train`, files in :mod:`masc_fast.pipeline.runs.files`).
:func:`masc_fast.pipeline.runs.train.train_run` builds its arguments from a
:class:`~masc_fast.pipeline.runs.config.RunConfig`.
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

from masc_fast._io import atomic_write_text, read_json
from masc_fast.pipeline.ranks import data_parallel, on_main
from masc_fast.pipeline.runs.checkpoints import load_checkpoint
from masc_fast.pipeline.runs.config import RunSummary
from masc_fast.pipeline.runs.epoch_loop import EpochLoop, LoopFiles
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
    write_steps,
)
from masc_fast.pipeline.runs.loading import resolve_device
from masc_fast.pipeline.runs.passes import evaluate, train_epoch
from masc_fast.pipeline.runs.recipes import TrainingRecipe
from masc_fast.pipeline.runs.training import make_optimizer

__all__ = ["TRAIN_RESUME", "run_dir_state", "train_device", "train_prepared"]

#: What a distributed training run's ranks are told when another rank failed.
TRAIN_RESUME = (
    "The run resumes from its last committed epoch: the same command with --resume (resume=True)."
)

logger = logging.getLogger(__name__)


def _row(epoch: int, stats, test, seconds: float) -> dict:
    """A metrics row; a training epoch's row also carries its per-step losses (``steps.csv``;
    kept in ``last``'s metadata with the rows, so a resume loses none)."""
    row = {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "train_accuracy_true": stats.accuracy_true,
        "test_accuracy": test.accuracy,
        "seconds": seconds,
    }
    if stats.step_losses:
        row["step_losses"] = list(stats.step_losses)
    return row


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


def run_dir_state(run_dir: Path, config: dict, recipe, resume: bool, group) -> str:
    """:func:`check_run_dir` on rank 0, its answer (or its error) on every rank."""

    def check():
        return check_run_dir(run_dir, config, recipe, resume)

    if group is None:
        return check()
    return on_main(check, "reading the run folder on rank 0", group)


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
    memorization=None,
    weight_decay: float = 0.0,
    input_noise: float = 0.0,
    group=None,
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
        progress bars over epochs and over each epoch's batches.
    on_epoch : callable, optional
        Called with a copy of each new metrics row after the epoch is committed.
    memorization : MemorizationRecorder, optional
        Records Arpit et al.'s measures after epoch 0 and every epoch
        (:mod:`masc_fast.pipeline.runs.memorization`); its seconds go into the row.
    weight_decay, input_noise : float, default 0
        Arpit et al.'s regularisers: the optimiser's L2 penalty, and the standard deviation
        of Gaussian noise added to the training inputs (:func:`train_epoch`).
    group : masc_fast.probing.distributed.RankGroup, optional
        Train on the ranks of a process group (torchrun): the model in
        DistributedDataParallel, the loaders this rank's parts of every batch
        (:class:`~masc_fast.data.BatchLoader` ``rank``), every statistic summed over the
        ranks; only rank 0 writes (``run_dir`` must be a folder every rank sees to resume).

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
    main = group is None or group.rank == 0
    state = run_dir_state(run_dir, config, recipe, resume, group)
    if state == "finished":
        check_labels(paths["labels"], true_labels, corrupted_labels, noise)
        return RunSummary.from_dict(read_json(paths["summary"]))
    if main:
        remove_stale_tmp(run_dir)

    device = train_device(device, amp)
    model.to(device)
    momentum = 0.0 if recipe.momentum is None else recipe.momentum
    optimizer = make_optimizer(
        recipe.optimizer, model.parameters(), recipe.lr, momentum, weight_decay=weight_decay
    )
    trained = data_parallel(model, device, group)
    forward = torch.compile(trained) if compile else trained
    evaluated = forward  # evaluations skip DDP: no collectives on uneven eval shards
    if group is not None:
        evaluated = torch.compile(model) if compile else model
    if memorization is not None and not main:
        memorization = None  # rank 0 measures (its files are the run's)
    autocast = torch.bfloat16 if amp else None
    passes = {
        "device": device,
        "autocast_dtype": autocast,
        "progress": progress and main,
        "group": group,
    }
    files = LoopFiles(
        last=paths["last"],
        final=paths["final"],
        write_metrics=lambda rows: (
            write_metrics(paths["metrics"], rows),
            write_steps(paths["steps"], rows),
        ),
        best=paths["best"],
        periodic=lambda epoch: epoch_path(run_dir, epoch),
        checkpoint_every=checkpoint_every,
    )
    loop = EpochLoop(
        model,
        optimizer,
        max_epochs=recipe.max_epochs,
        files=files,
        progress=progress and main,
        description=f"train {run_dir.name}",
        write=main,
    )

    if state == "resume" and paths["last"].is_file():
        check_labels(paths["labels"], true_labels, corrupted_labels, noise)
        loop.resume()
        logger.info("resuming %s after epoch %d", run_dir, loop.epoch)
    else:
        if state == "resume":  # killed before the first epoch ended: start over
            check_labels(paths["labels"], true_labels, corrupted_labels, noise)
            if paths["init"].is_file():
                load_checkpoint(paths["init"], model)
        if main:
            write_labels(paths["labels"], true_labels, corrupted_labels, noise)
            write_setup(run_dir, config, recipe)
        started = time.perf_counter()
        eval_loader = train_loader if train_eval_loader is None else train_eval_loader
        initial_train = evaluate(evaluated, eval_loader, **passes)
        initial_test = evaluate(evaluated, test_loader, **passes)
        row = _row(0, initial_train, initial_test, time.perf_counter() - started)
        if memorization is not None:
            row["memorization_seconds"] = memorization.record(model, 0, device)
        if main:
            save_snapshot(paths["init"], model, epoch=0, kind="init", metrics=row)
        loop.start([row], {"best_epoch": None, "best_test": None})

    def epoch_row(epoch: int) -> dict:
        started = time.perf_counter()
        for group in optimizer.param_groups:  # a function of the epoch: resumes exactly
            group["lr"] = recipe.lr_at(epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        stats = train_epoch(
            forward,
            train_loader,
            optimizer,
            description=f"epoch {epoch}",
            input_noise=input_noise,
            **passes,
        )
        test = evaluate(evaluated, test_loader, **passes)
        row = _row(epoch, stats, test, time.perf_counter() - started)
        if memorization is not None:  # before the commit: a resumed epoch rewrites its file
            row["memorization_seconds"] = memorization.record(model, epoch, device)
        return row

    def track_best(state: dict, row: dict) -> None:
        """The best test accuracy over epochs >= 1, first on ties (``best.safetensors``)."""
        if state["best_test"] is None or row["test_accuracy"] > state["best_test"]:
            state.update(best_epoch=row["epoch"], best_test=row["test_accuracy"])

    def reached(rows: list[dict], state: dict) -> bool:
        return rows[-1]["epoch"] > 0 and rows[-1]["train_accuracy"] >= recipe.target_accuracy

    rows = loop.run(
        epoch_row,
        stop=reached,
        track=track_best,
        postfix=lambda row: {
            "train": f"{row['train_accuracy']:.4f}",
            "test": f"{row['test_accuracy']:.4f}",
        },
        on_epoch=on_epoch,
    )
    loop.finish()
    epoch, best_epoch, best_test = loop.epoch, loop.state["best_epoch"], loop.state["best_test"]
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
    if main:
        atomic_write_text(paths["summary"], json.dumps(summary.to_dict(), indent=2) + "\n")
    if group is not None:  # every rank returns once the run's files are written
        group.barrier("waiting for rank 0 to write the summary")
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
