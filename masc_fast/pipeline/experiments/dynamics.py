"""MASC across training: every saved checkpoint of a run, probed with both label sets.

The paper probes the final model; its discussion asks how the decodable subspaces evolve while
the network memorises. The ``dynamics`` experiment probes the run's initial weights, every
periodic snapshot (``epoch_NNNN``, every ``checkpoint_every`` epochs) and the final model, each
with subspaces from the corrupted and from the true training labels (one probe pass per
checkpoint, cached under ``run_dir/probes/`` like the other MASC experiments, so a killed
experiment resumes at the first checkpoint it had not finished). Rows are those of
:func:`masc_fast.pipeline.experiments.masc.run_masc_experiment` with ``checkpoint`` and
``epoch`` set per checkpoint, plus one ``probe_seconds`` row per checkpoint (the probe's wall
time: loading, forward passes, fits and scoring).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from masc_fast._progress import progress_bar
from masc_fast.pipeline.experiments.masc import probe_rows, probe_seconds, probe_tables
from masc_fast.pipeline.experiments.settings import ProbeSettings
from masc_fast.pipeline.runs.loading import checkpoint_epoch, load_config

__all__ = ["run_dynamics", "training_checkpoints"]

_PERIODIC = re.compile(r"^epoch_(\d+)$")


def training_checkpoints(run_dir: str | Path) -> list[tuple[str, int]]:
    """``(stem, epoch)`` of a finished run's checkpoints in epoch order: ``init`` (0), every
    ``epoch_NNNN`` and ``final`` (left out when a periodic snapshot holds the same epoch)."""
    run_dir = Path(run_dir)
    found = [("init", 0)]
    for path in sorted((run_dir / "checkpoints").glob("epoch_*.safetensors")):
        match = _PERIODIC.match(path.stem)
        if match:
            found.append((path.stem, int(match.group(1))))
    final = checkpoint_epoch(run_dir, "final")
    if all(epoch != final for _, epoch in found):
        found.append(("final", final))
    return sorted(found, key=lambda item: item[1])


def run_dynamics(
    run_dir: Path, experiment: str, *, p: float | None, settings: ProbeSettings
) -> pd.DataFrame:
    """The ``dynamics`` rows of one finished run (module docstring)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    checkpoints = training_checkpoints(run_dir)
    frames = []
    bar = progress_bar(
        checkpoints, desc="dynamics", unit="checkpoint", disable=not settings.progress
    )
    for stem, epoch in bar:
        tables = probe_tables(run_dir, stem, None, "run", settings)
        constants = {
            **config.run_columns(),
            "experiment": experiment,
            "checkpoint": stem,
            "epoch": epoch,
            "variance": settings.variance if settings.thresholds is None else float("nan"),
        }
        rows = probe_rows(*tables, ("corrupted", "true"), constants)
        seconds = {
            **constants,
            "layer": "model",
            "subspaces": "",
            "split": "train",
            "labels": "",
            "metric": "probe_seconds",
            "value": probe_seconds(run_dir, stem, "run", settings),
        }
        frames += [rows, pd.DataFrame([seconds])]
    return pd.concat(frames, ignore_index=True)
