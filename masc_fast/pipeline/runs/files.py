"""Files of a training run directory: paths, config and label checks, metrics CSV.

The layout is documented in :mod:`masc_fast.pipeline.runs.train`. Everything is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from masc_fast._io import (
    TEMPORARY_PREFIX,
    atomic_path,
    atomic_write_text,
    read_json,
    remove_stale_temporaries,
)
from masc_fast._version import __version__
from masc_fast.pipeline.folder_lock import LOCK_NAME
from masc_fast.pipeline.runs.checkpoints import save_checkpoint
from masc_fast.pipeline.runs.recipes import TrainingRecipe

__all__ = [
    "METRIC_COLUMNS",
    "PLACEMENT_KEYS",
    "RUN_FORMAT",
    "check_labels",
    "check_run_dir",
    "recipe_document",
    "epoch_path",
    "read_metrics",
    "read_steps",
    "remove_stale_tmp",
    "run_paths",
    "save_snapshot",
    "write_labels",
    "write_metrics",
    "write_steps",
    "write_setup",
]

RUN_FORMAT = 1
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "train_accuracy_true",
    "test_accuracy",
    "seconds",
)
#: Config keys that say where a run executes, not what it computes; free to change on resume.
PLACEMENT_KEYS = frozenset({"device", "data_root", "download"})
# Temporary files atomic_path leaves behind when the process is killed mid-write.
_STALE_TMP = re.compile(
    r"^\.(config|recipe|labels|metrics|steps|summary|init|last|best|final|epoch_\d+)\..+"
)
# What a directory may hold when a kill interrupted the setup before config.json was written.
_SETUP_FILES = frozenset({"recipe.json", "labels.npz", "checkpoints"})


def run_paths(run_dir: Path) -> dict[str, Path]:
    """Every fixed path of a run directory, by short name."""
    checkpoints = run_dir / "checkpoints"
    return {
        "config": run_dir / "config.json",
        "recipe": run_dir / "recipe.json",
        "labels": run_dir / "labels.npz",
        "metrics": run_dir / "metrics.csv",
        "steps": run_dir / "steps.csv",
        "summary": run_dir / "summary.json",
        "checkpoints": checkpoints,
        "init": checkpoints / "init.safetensors",
        "last": checkpoints / "last.safetensors",
        "best": checkpoints / "best.safetensors",
        "final": checkpoints / "final.safetensors",
    }


def epoch_path(run_dir: Path, epoch: int) -> Path:
    """``checkpoints/epoch_{epoch:04d}.safetensors``."""
    return run_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors"


def save_snapshot(path: Path, model: torch.nn.Module, *, epoch: int, kind: str, metrics: dict):
    """A model-only checkpoint (no optimizer, no RNG) whose metadata says its kind and metrics.

    What a run's ``init``, ``epoch_NNNN``, ``best`` and ``final`` checkpoints (and a retrain's
    ``final``) hold; only ``last`` carries the optimizer and RNG states a resume needs.
    """
    return save_checkpoint(
        path, model, epoch=epoch, metadata={"kind": kind, "metrics": metrics}, rng=False
    )


def recipe_document(recipe: TrainingRecipe) -> dict:
    """Contents of ``recipe.json``: the resolved recipe and the versions that ran it."""
    return {
        "format": RUN_FORMAT,
        "recipe": recipe.to_dict(),
        "masc_fast": __version__,
        "torch": torch.__version__,
    }


def write_setup(run_dir: Path, config: dict, recipe: TrainingRecipe) -> None:
    """``recipe.json``, then ``config.json`` (its presence marks a run directory)."""
    paths = run_paths(run_dir)
    atomic_write_text(paths["recipe"], json.dumps(recipe_document(recipe), indent=2) + "\n")
    atomic_write_text(paths["config"], json.dumps(config, indent=2) + "\n")


def _differences(saved: dict, current: dict, prefix: str) -> list[str]:
    keys = sorted((set(saved) | set(current)) - PLACEMENT_KEYS)
    return [
        f"{prefix}{key}: {saved.get(key)!r} in the run, {current.get(key)!r} now"
        for key in keys
        if saved.get(key) != current.get(key)
    ]


def check_run_dir(run_dir: Path, config: dict, recipe: TrainingRecipe, resume: bool) -> str:
    """``"fresh"``, ``"finished"`` or ``"resume"``; raises if the directory cannot be used.

    A directory is fresh when empty (or, with ``resume``, when a kill interrupted its setup);
    otherwise ``resume`` is required, and ``config.json`` / ``recipe.json`` must agree with
    ``config`` and ``recipe`` except for :data:`PLACEMENT_KEYS`.
    """
    paths = run_paths(run_dir)
    entries = sorted(entry.name for entry in run_dir.iterdir()) if run_dir.is_dir() else []
    entries = [name for name in entries if name != LOCK_NAME]  # the folder's lock, not a file of it
    if not entries:
        return "fresh"
    if not resume:
        raise FileExistsError(
            f"run directory {run_dir} is not empty (holds {', '.join(entries[:5])}"
            f"{', ...' if len(entries) > 5 else ''}); pass resume=True (masc-fast train "
            "--resume) to continue or reuse that run, or choose another directory"
        )
    if not paths["config"].is_file():
        if all(
            name in _SETUP_FILES or _STALE_TMP.match(name) or name.startswith(TEMPORARY_PREFIX)
            for name in entries
        ):
            return "fresh"  # killed before config.json was written
        raise ValueError(
            f"{run_dir} has no config.json, so it is not a masc_fast training run; "
            "choose an empty or new directory"
        )
    saved_recipe = {}
    if paths["recipe"].is_file():
        saved_recipe = read_json(paths["recipe"]).get("recipe", {})
    problems = _differences(read_json(paths["config"]), config, "")
    problems += _differences(saved_recipe, recipe.to_dict(), "recipe.")
    if problems:
        raise ValueError(
            f"cannot resume {run_dir}: its configuration differs from this one ("
            + "; ".join(problems)
            + ")"
        )
    return "finished" if paths["summary"].is_file() else "resume"


def remove_stale_tmp(run_dir: Path, pattern: re.Pattern = _STALE_TMP) -> None:
    """Delete temporary files that a kill during an atomic write left in the run.

    ``pattern`` matches their names in ``run_dir`` and ``run_dir/checkpoints``; the default is
    a training run's (:mod:`masc_fast.pipeline.experiments.retrain_files` passes a retrain's).
    """
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for entry in folder.iterdir():
                if pattern.match(entry.name) and entry.is_file():
                    entry.unlink()
    remove_stale_temporaries(run_dir)  # the private folders of today's atomic writes


def write_labels(path: Path, true_labels: np.ndarray, corrupted: np.ndarray, noise: dict):
    """``labels.npz``: arrays ``true`` and ``corrupted`` plus the ``noise`` scalars."""
    with atomic_path(path) as tmp:
        np.savez(tmp, true=true_labels, corrupted=corrupted, **noise)


def check_labels(path: Path, true_labels: np.ndarray, corrupted: np.ndarray, noise: dict):
    """Raise ``ValueError`` unless ``labels.npz`` holds exactly these labels and scalars."""
    with np.load(path, allow_pickle=False) as saved:
        stored = {key: saved[key] for key in saved.files}
    expected = dict(noise, true=true_labels, corrupted=corrupted)
    wrong = [
        key
        for key, value in expected.items()
        if key not in stored or not np.array_equal(stored[key], np.asarray(value))
    ]
    if wrong:
        raise ValueError(
            f"cannot resume: {path} differs from the labels this run would use in {wrong}; "
            "the dataset or the noise recipe changed since the run started"
        )


def write_metrics(path: Path, rows: list[dict], columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    """``metrics.csv`` from the rows (floats as ``repr``, so they read back exactly).

    ``columns`` are the CSV's columns, in order (default a training run's; a retrain passes
    :data:`masc_fast.pipeline.experiments.retrain_files.RETRAIN_METRIC_COLUMNS`); ``None`` values are written empty.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[key] is None else repr(row[key]) for key in columns])
    atomic_write_text(path, buffer.getvalue())


#: Columns of ``steps.csv``: the global step (1-based), its epoch, the batch's mean loss.
STEP_COLUMNS = ("step", "epoch", "loss")


def write_steps(path: Path, rows: list[dict]) -> None:
    """``steps.csv`` from the metrics rows' per-step losses (rows without them add none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STEP_COLUMNS)
    step = 0
    for row in rows:
        for loss in row.get("step_losses", ()):
            step += 1
            writer.writerow([step, row["epoch"], repr(float(loss))])
    atomic_write_text(path, buffer.getvalue())


def read_steps(path: Path) -> dict[str, np.ndarray]:
    """``steps.csv`` as arrays ``step`` (int64), ``epoch`` (int64), ``loss`` (float64)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "step": np.array([int(row["step"]) for row in rows], dtype=np.int64),
        "epoch": np.array([int(row["epoch"]) for row in rows], dtype=np.int64),
        "loss": np.array([float(row["loss"]) for row in rows], dtype=np.float64),
    }


def read_metrics(path: Path) -> list[dict]:
    """Rows of a ``metrics.csv`` as dicts (``epoch`` int, the rest float or ``None``)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {
            key: (int(value) if key == "epoch" else None if value == "" else float(value))
            for key, value in row.items()
        }
        for row in rows
    ]
