"""Fine-tuning a memorised model on its MASC relabels: the epochs of one retrain (SPEC §6).

The epochs run on the one resumable loop of training runs
(:class:`~masc_fast.pipeline.runs.epoch_loop.EpochLoop`); what is particular to a retrain is
its rows (test80 and test20 accuracies) and its stop rule.

A fresh optimiser of the run's kind and learning rate (:meth:`RunConfig.recipe`), the same batch
size and the run's own ``shuffle`` setting (the authors did not shuffle). After each epoch the
running train accuracy against the new labels and the accuracies on the 80 % and 20 % parts of
the test set are recorded, and the epoch is committed to the work directory
(:mod:`masc_fast.pipeline.experiments.retrain_files`). How long it runs is a :class:`RetrainVariant`: an epoch cap
and, optionally, the authors' early stopping on the 20 % accuracy (:func:`patience_step`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from masc_fast._io import atomic_write_text
from masc_fast.data import BatchLoader
from masc_fast.pipeline.experiments.relabel import Relabelling, TrainedRun, subset_split
from masc_fast.pipeline.experiments.retrain_files import work_paths, write_metrics
from masc_fast.pipeline.runs.checkpoints import load_model_weights
from masc_fast.pipeline.runs.epoch_loop import EpochLoop, LoopFiles
from masc_fast.pipeline.runs.training import make_optimizer

__all__ = ["VARIANTS", "RetrainVariant", "early_stop_epoch", "fine_tune", "patience_step"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainVariant:
    """How long a retrain runs: an epoch cap and, optionally, early-stopping patience."""

    name: str
    max_epochs: int
    patience: int | None


#: The paper's two retraining schedules (SPEC §6 items 5 and 6).
VARIANTS = {
    "retrain": RetrainVariant("retrain", max_epochs=30, patience=3),
    "retrain-10": RetrainVariant("retrain-10", max_epochs=10, patience=None),
}
_EVAL_BATCH_SIZE = 512


def patience_step(best: float | None, counter: int, value: float) -> tuple[float, int]:
    """One epoch of the authors' early-stopping rule.

    A value strictly higher than the best so far (or the first value, ``best=None``) becomes
    the best and resets the counter to 0; any other value increments it. The loop stops once
    the counter reaches the patience.

    Parameters
    ----------
    best : float or None
        Best value so far; ``None`` before the first epoch.
    counter : int
        Epochs since the last strict improvement.
    value : float
        This epoch's value (accuracy on the 20 % split).

    Returns
    -------
    best, counter : float, int

    Examples
    --------
    >>> patience_step(None, 0, 0.5), patience_step(0.5, 0, 0.5), patience_step(0.5, 2, 0.6)
    ((0.5, 0), (0.5, 1), (0.6, 0))
    """
    if best is None or value > best:
        return float(value), 0
    return best, counter + 1


def early_stop_epoch(values: Sequence[float], patience: int) -> int | None:
    """The 1-based epoch at which :func:`patience_step` stops a sequence, or ``None``.

    Parameters
    ----------
    values : sequence of float
        Per-epoch values, epoch 1 first.
    patience : int
        At least 1.

    Returns
    -------
    int or None
        The epoch whose value brings the counter to ``patience`` (that epoch is trained and
        kept); ``None`` if the sequence never stops.

    Raises
    ------
    ValueError
        If ``patience < 1``.

    Examples
    --------
    >>> early_stop_epoch([0.5, 0.6, 0.6, 0.55, 0.6, 0.7], patience=3)
    5
    """
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be a positive integer, got {patience!r}")
    best, counter = None, 0
    for epoch, value in enumerate(values, start=1):
        best, counter = patience_step(best, counter, value)
        if counter >= patience:
            return epoch
    return None


def _row(epoch: int, train, test80, test20, seconds: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": train.loss,
        "train_accuracy": train.accuracy,
        "train_accuracy_true": train.accuracy_true,
        "test80_accuracy": test80.accuracy,
        "test20_accuracy": test20.accuracy,
        "seconds": seconds,
    }


def fine_tune(
    trained: TrainedRun,
    work: Path,
    relabelling: Relabelling,
    schedule: RetrainVariant,
    *,
    state: str,
    progress: bool,
    on_epoch: Callable[[dict], None] | None,
) -> list[dict]:
    """Fine-tune the memorised weights on the relabels in ``work``; the metrics rows.

    Parameters
    ----------
    trained : masc_fast.pipeline.experiments.relabel.TrainedRun
        The memorised run; its model is reloaded from the final checkpoint first.
    work : pathlib.Path
        The work directory (:mod:`masc_fast.pipeline.experiments.retrain_files`), already holding
        ``settings.json`` and ``relabels.npz``.
    relabelling : masc_fast.pipeline.experiments.relabel.Relabelling
        The new training labels and the 80/20 test split.
    schedule : RetrainVariant
    state : {"fresh", "resume"}
        From :func:`masc_fast.pipeline.experiments.retrain_files.work_state`; ``"resume"`` continues from
        ``checkpoints/last.safetensors`` when there is one.
    progress : bool
        progress bars.
    on_epoch : callable or None
        Called with each committed metrics row plus ``variant`` and ``subspaces``.

    Returns
    -------
    list of dict
        Rows with :data:`masc_fast.pipeline.experiments.retrain_files.RETRAIN_METRIC_COLUMNS`, epoch 0 first.
    """
    from masc_fast.pipeline.ranks import current_group, data_parallel, shard
    from masc_fast.pipeline.runs.training import evaluate, train_epoch

    paths = work_paths(work)
    config, device, model = trained.config, trained.device, trained.model
    recipe = config.recipe()
    load_model_weights(trained.weights, model)
    model.to(device)
    momentum = 0.0 if recipe.momentum is None else recipe.momentum
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), recipe.lr, momentum)
    group, part = current_group(), shard()  # under torchrun: DDP, rank 0 writes
    main = group is None or group.rank == 0
    trained_model = data_parallel(model, device, group)
    labels = (relabelling.relabels, trained.true_labels)
    train_loader = BatchLoader(
        trained.train,
        *labels,
        batch_size=recipe.batch_size,
        shuffle=config.shuffle,
        seed=config.seed,
        device=trained.loader_device,
        **part,
    )
    eval_size = max(_EVAL_BATCH_SIZE, recipe.batch_size)
    train_eval = BatchLoader(
        trained.train, *labels, batch_size=eval_size, device=trained.loader_device, **part
    )
    parts = {
        name: BatchLoader(
            subset_split(trained.test, indices),
            batch_size=eval_size,
            device=trained.loader_device,
            **part,
        )
        for name, indices in (("test80", relabelling.test80), ("test20", relabelling.test20))
    }
    passes = {"device": device, "progress": progress and main, "group": group}
    files = LoopFiles(
        last=paths["last"],
        final=paths["final"],
        write_metrics=lambda rows: write_metrics(paths["metrics"], rows),
    )
    loop = EpochLoop(
        model,
        optimizer,
        max_epochs=schedule.max_epochs,
        files=files,
        progress=progress and main,
        description=f"retrain {work.name}",
        write=main,
    )
    if state == "resume" and paths["last"].is_file():
        loop.resume()
        logger.info("resuming %s after epoch %d", work, loop.epoch)
    else:
        torch.manual_seed(config.seed)  # dropout draws, if any, as in a fresh process
        started = time.perf_counter()
        initial = [evaluate(model, loader, **passes) for loader in (train_eval, *parts.values())]
        row = _row(0, *initial, time.perf_counter() - started)
        loop.start([row], {"best_test20": None, "counter": 0, "stopped": False})

    def epoch_row(epoch: int) -> dict:
        started = time.perf_counter()
        train_loader.set_epoch(epoch)
        stats = train_epoch(
            trained_model, train_loader, optimizer, description=f"epoch {epoch}", **passes
        )
        test80, test20 = (evaluate(model, loader, **passes) for loader in parts.values())
        return _row(epoch, stats, test80, test20, time.perf_counter() - started)

    def track_patience(state: dict, row: dict) -> None:
        """The authors' early stopping on the 20 % accuracy (:func:`patience_step`)."""
        if schedule.patience is not None:
            best, counter = patience_step(
                state["best_test20"], state["counter"], row["test20_accuracy"]
            )
            state.update(best_test20=best, counter=counter, stopped=counter >= schedule.patience)

    def report(row: dict) -> None:
        if on_epoch is not None:
            on_epoch({**row, "variant": schedule.name, "subspaces": relabelling.subspaces})

    rows = loop.run(
        epoch_row,
        stop=lambda rows, state: state["stopped"],
        track=track_patience,
        postfix=lambda row: {
            "test80": f"{row['test80_accuracy']:.4f}",
            "test20": f"{row['test20_accuracy']:.4f}",
        },
        on_epoch=report,
    )
    loop.finish()
    epoch, stopped = loop.epoch, loop.state["stopped"]
    summary = {
        "variant": schedule.name,
        "subspaces": relabelling.subspaces,
        "layer": relabelling.layer,
        "best_layer_test20": relabelling.test20_accuracy,
        "epochs": epoch,
        "stopped_early": bool(stopped),
        "final": rows[-1],
        "seconds": sum(row["seconds"] for row in rows),
        "device": str(device),
        "torch_version": torch.__version__,
    }
    if main:
        atomic_write_text(paths["summary"], json.dumps(summary, indent=2) + "\n")
    if group is not None:  # every rank returns once the summary is written
        group.barrier("waiting for rank 0 to write the retrain summary")
    logger.info(
        "%s: %d epoch(s)%s; test80 %.4f, test20 %.4f",
        work,
        epoch,
        " (early stop)" if stopped else "",
        rows[-1]["test80_accuracy"],
        rows[-1]["test20_accuracy"],
    )
    return rows
