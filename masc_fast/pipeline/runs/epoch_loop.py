"""The one resumable epoch loop: training runs, retraining on relabels and ``train_until``.

:class:`EpochLoop` owns what every training job shares: the epoch counter, the metrics rows,
a small JSON-able loop state (best test accuracy, early-stopping counters), the progress bar,
and, when it has :class:`LoopFiles`, the commit protocol of a run directory. A job supplies only
what differs: how one epoch runs and what row it gives, how the state follows the rows, and
when to stop.

Commit protocol (with files): after each epoch ``last`` is written first (model, optimizer,
RNG states, the rows and the state: the commit point), then what derives from it (a periodic
snapshot every ``checkpoint_every`` epochs, ``best`` when the state's ``best_epoch`` is this
epoch, the metrics file). A kill at any instant loses at most the epoch in progress;
:meth:`EpochLoop.resume` restores everything from ``last`` and redoes the derived writes, so a
resumed job ends with the weights and files an uninterrupted one would have. Without files
(``train_until``) nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from masc_fast._progress import progress_bar
from masc_fast.pipeline.runs.checkpoints import load_checkpoint, save_checkpoint
from masc_fast.pipeline.runs.files import save_snapshot

__all__ = ["EpochLoop", "LoopFiles"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopFiles:
    """Where a resumable loop commits.

    Attributes
    ----------
    last : Path
        Model, optimizer, RNG states, rows and loop state after every epoch (the commit point).
    final : Path
        Model-only snapshot when the loop ends.
    write_metrics : callable
        ``write_metrics(rows)`` rewrites the metrics file (atomically) after every epoch.
    best : Path, optional
        Model-only snapshot of the epoch the loop state names as ``best_epoch``.
    periodic : callable, optional
        ``periodic(epoch) -> Path`` of a model-only snapshot every ``checkpoint_every`` epochs.
    checkpoint_every : int
        Cadence of the periodic snapshots.
    """

    last: Path
    final: Path
    write_metrics: Callable[[list[dict]], None]
    best: Path | None = None
    periodic: Callable[[int], Path] | None = None
    checkpoint_every: int = 0


class EpochLoop:
    """Epochs of one training job, committed to ``files`` (or kept in memory without them).

    Parameters
    ----------
    model : torch.nn.Module
        The model trained in place (checkpoints hold it, not a compiled wrapper).
    optimizer : torch.optim.Optimizer
        Saved with ``last`` and restored by :meth:`resume`.
    max_epochs : int
        Epoch cap.
    files : LoopFiles, optional
        The run directory's files; ``None`` writes nothing.
    progress : bool
        A progress bar over epochs.
    description : str
        The bar's label.
    write : bool, default True
        Commit to ``files``; ``False`` (the other ranks of a distributed run, whose rank 0
        writes) only reads them to resume.

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> loop = EpochLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), max_epochs=3)
    >>> loop.start([], {})
    >>> rows = loop.run(lambda epoch: {"epoch": epoch}, stop=lambda rows, state: False)
    >>> [row["epoch"] for row in rows]
    [1, 2, 3]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        max_epochs: int,
        files: LoopFiles | None = None,
        progress: bool = False,
        description: str = "train",
        write: bool = True,
    ):
        self.model, self.optimizer, self.write = model, optimizer, write
        self.max_epochs, self.files = max_epochs, files
        self.progress, self.description = progress, description
        self.epoch = 0
        self.rows: list[dict] = []
        self.state: dict = {}

    def start(self, rows: list[dict], state: dict) -> None:
        """Begin afresh with ``rows`` (e.g. the epoch-0 row of the initial model) and ``state``."""
        self.epoch, self.rows, self.state = 0, list(rows), dict(state)
        if self.files is not None and self.write:
            self.files.write_metrics(self.rows)

    def resume(self) -> None:
        """Continue from ``files.last``: weights, optimizer, RNG states, rows and state."""
        checkpoint = load_checkpoint(self.files.last, self.model, self.optimizer, restore_rng=True)
        meta = dict(checkpoint.metadata)
        self.epoch, self.rows = checkpoint.epoch, meta.pop("metrics")
        self.state = meta
        if self.write:
            self._commit_derived()  # redo what a kill right after the commit may have skipped

    def run(
        self,
        epoch_row: Callable[[int], dict],
        *,
        stop: Callable[[list[dict], dict], bool],
        track: Callable[[dict, dict], None] | None = None,
        postfix: Callable[[dict], dict] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Run epochs until ``stop(rows, state)`` or the cap; returns every row.

        Parameters
        ----------
        epoch_row : callable
            ``epoch_row(epoch) -> row``: trains epoch ``epoch`` (1-based) and returns its
            metrics row.
        stop : callable
            ``stop(rows, state)``, asked before each epoch (also right after a resume).
        track : callable, optional
            ``track(state, row)`` updates the loop state in place from the new row (best so
            far, early-stopping counters); it is saved with ``last``.
        postfix : callable, optional
            The progress bar's postfix for a row.
        on_epoch : callable, optional
            Called with a copy of each row once its epoch is committed.
        """
        bar = progress_bar(
            total=self.max_epochs,
            initial=self.epoch,
            desc=self.description,
            unit="epoch",
            disable=not self.progress,
        )
        try:
            while self.epoch < self.max_epochs and not stop(self.rows, self.state):
                row = epoch_row(self.epoch + 1)
                self.epoch += 1
                self.rows.append(row)
                if track is not None:
                    track(self.state, row)
                self._commit()
                bar.update(1)
                if postfix is not None:
                    bar.set_postfix(postfix(row), refresh=False)
                logger.debug("epoch %d: %s", self.epoch, row)
                if on_epoch is not None:
                    on_epoch(dict(row))
        finally:
            bar.close()
        return self.rows

    def finish(self) -> None:
        """Write the ``final`` model snapshot (with files)."""
        if self.files is not None and self.write:
            save_snapshot(
                self.files.final, self.model, epoch=self.epoch, kind="final", metrics=self.rows[-1]
            )

    def _commit(self) -> None:
        if self.files is None or not self.write:
            return
        save_checkpoint(
            self.files.last,
            self.model,
            self.optimizer,
            epoch=self.epoch,
            metadata={"metrics": self.rows, **self.state},
        )
        self._commit_derived()

    def _commit_derived(self) -> None:
        """The files derived from ``last``: periodic and best snapshots, the metrics file."""
        files, epoch, row = self.files, self.epoch, self.rows[-1]
        if epoch > 0 and files.periodic is not None and epoch % files.checkpoint_every == 0:
            save_snapshot(files.periodic(epoch), self.model, epoch=epoch, kind="epoch", metrics=row)
        if epoch > 0 and files.best is not None and self.state.get("best_epoch") == epoch:
            save_snapshot(files.best, self.model, epoch=epoch, kind="best", metrics=row)
        files.write_metrics(self.rows)
