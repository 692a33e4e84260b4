"""One sweep cell: train (or resume) the run it needs, then run its experiment."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from masc_fast.pipeline.experiments import ProbeSettings, run_experiment

__all__ = ["cell_config", "run_cell", "run_name"]


def run_name(
    model: str,
    dataset: str,
    p: float,
    seed: int,
    randomize: str = "none",
    regularization: str = "none",
) -> str:
    """Folder name of a training run in a sweep: ``mlp-digits-p0.2-s1`` (with the
    randomization after the dataset and the regularization after the seed when they are not
    ``"none"``)."""
    mode = "" if randomize == "none" else f"-{randomize}"
    extra = "" if regularization == "none" else f"-{regularization}"
    return f"{model}-{dataset}{mode}-p{p:g}-s{seed}{extra}"


def cell_config(cell, spec):
    """The :class:`~masc_fast.pipeline.runs.config.RunConfig` of the run a cell trains (or
    reuses): the cell's coordinates (p = 0 for ``exp3``) and the sweep's ``[train]`` options."""
    from masc_fast.pipeline.runs.config import RunConfig

    return RunConfig(
        model=cell.model,
        dataset=cell.dataset,
        p=cell.train_p,
        seed=cell.seed,
        randomize=cell.randomize,
        regularization=cell.regularization,
        **dict(spec.train),
    )


def run_cell(cell, spec) -> pd.DataFrame:
    """Train (or resume) the run a sweep cell needs, then run its experiment.

    ``exp3`` cells train (or reuse) the p = 0 run of the same model, dataset and seed and
    probe it with labels corrupted at the cell's p. Used by :func:`masc_fast.pipeline.sweeps.run.run_sweep`.
    """
    from masc_fast.pipeline.runs.train import train_run

    config = cell_config(cell, spec)
    run_dir = Path(spec.runs_dir) / cell.run_id
    progress = bool(spec.probe.get("progress", True))
    train_run(config, run_dir, resume=(run_dir / "config.json").exists(), progress=progress)
    settings = ProbeSettings(**dict(spec.probe))
    p = cell.p if cell.experiment == "exp3" else None
    return run_experiment(run_dir, cell.experiment, p=p, settings=settings)
