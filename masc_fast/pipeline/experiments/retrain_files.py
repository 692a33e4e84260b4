"""Files of a retrain work directory: paths, settings and relabel checks, metrics CSV.

One work directory per variant and subspace set, by default under the run
(:func:`masc_fast.pipeline.experiments.retrain.retrain_run`)::

    <run_dir>/retrain/<variant>-<subspaces>/
      settings.json          what this retrain is (variant, subspaces, split seed, variance,
                             epoch cap, patience, shuffle, recipe, the run and the epoch of its
                             final checkpoint); checked on resume
      relabels.npz           the new labels, chosen layer, 20 % accuracies per layer and the
                             split indices (:class:`~masc_fast.pipeline.experiments.relabel.Relabelling`); computed
                             once, then reused
      metrics.csv            epoch, train_loss, train_accuracy (vs the relabels),
                             train_accuracy_true, test80_accuracy, test20_accuracy, seconds;
                             row 0 is the memorised model (eval-mode accuracies)
      checkpoints/
        last.safetensors     after every epoch: model, optimizer, RNG states, metrics so far
                             and the early-stopping state; what a resume continues from
        final.safetensors    the model when fine-tuning stopped
      summary.json           written when finished

Every file is written atomically; ``last.safetensors`` is the commit point of an epoch, so a
killed retrain loses at most the epoch in progress and, resumed, ends with the weights and
metrics an uninterrupted one would have.
"""

from __future__ import annotations

import re
from pathlib import Path

from masc_fast._io import TEMPORARY_PREFIX, read_json
from masc_fast.pipeline.experiments.relabel import Relabelling
from masc_fast.pipeline.folder_lock import LOCK_NAME
from masc_fast.pipeline.runs import files as run_files

__all__ = [
    "RETRAIN_METRIC_COLUMNS",
    "check_relabelling",
    "remove_stale_tmp",
    "settings_document",
    "work_paths",
    "work_state",
    "write_metrics",
]

RETRAIN_METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "train_accuracy_true",
    "test80_accuracy",
    "test20_accuracy",
    "seconds",
)
_FORMAT = 1
# Temporary files atomic_path leaves behind when the process is killed mid-write.
_STALE_TMP = re.compile(r"^\.(settings|relabels|metrics|summary|last|final)\..+")


def work_paths(work: Path) -> dict[str, Path]:
    """Every fixed path of a retrain work directory, by short name."""
    return {
        "settings": work / "settings.json",
        "relabels": work / "relabels.npz",
        "metrics": work / "metrics.csv",
        "summary": work / "summary.json",
        "checkpoints": work / "checkpoints",
        "last": work / "checkpoints" / "last.safetensors",
        "final": work / "checkpoints" / "final.safetensors",
    }


def _is_setup_leftover(name: str) -> bool:
    return (
        name == "checkpoints" or bool(_STALE_TMP.match(name)) or name.startswith(TEMPORARY_PREFIX)
    )


def work_state(work: Path, settings: dict, resume: bool) -> str:
    """``"fresh"``, ``"resume"`` or ``"finished"``; raises if ``work`` cannot be used.

    Raises
    ------
    FileExistsError
        If ``work`` is not empty and ``resume`` is false.
    ValueError
        If ``work`` is not a retrain, or its ``settings.json`` differs from ``settings``.
    """
    entries = sorted(entry.name for entry in work.iterdir()) if work.is_dir() else []
    entries = [name for name in entries if name != LOCK_NAME]  # the folder's lock, not a file of it
    if not entries:
        return "fresh"
    if not resume:
        raise FileExistsError(
            f"retrain directory {work} is not empty (holds {', '.join(entries[:5])}); pass "
            "resume=True (masc-fast retrain --resume) to continue or reuse it"
        )
    paths = work_paths(work)
    if not paths["settings"].is_file():
        if all(_is_setup_leftover(name) for name in entries):
            return "fresh"  # killed before settings.json was written
        raise ValueError(f"{work} has no settings.json, so it is not a masc_fast retrain")
    saved = read_json(paths["settings"])
    problems = [
        f"{key}: {saved.get(key)!r} there, {settings.get(key)!r} now"
        for key in sorted(set(saved) | set(settings))
        if saved.get(key) != settings.get(key)
    ]
    if problems:
        raise ValueError(f"cannot resume {work}: its settings differ (" + "; ".join(problems) + ")")
    return "finished" if paths["summary"].is_file() else "resume"


def remove_stale_tmp(work: Path) -> None:
    """Delete temporary files that a kill during an atomic write left in ``work``."""
    run_files.remove_stale_tmp(work, _STALE_TMP)


def write_metrics(path: Path, rows: list[dict]) -> None:
    """``metrics.csv`` of a retrain (:data:`RETRAIN_METRIC_COLUMNS`), atomically."""
    run_files.write_metrics(path, rows, RETRAIN_METRIC_COLUMNS)


def settings_document(
    config, recipe, schedule, subspaces: str, split_seed: int, variance: float, memorised_epoch
) -> dict:
    """Contents of ``settings.json``: what a retrain computes, compared on resume."""
    run = {key: getattr(config, key) for key in ("model", "dataset", "p", "seed", "noise_recipe")}
    return {
        "format": _FORMAT,
        "variant": schedule.name,
        "subspaces": subspaces,
        "split_seed": int(split_seed),
        "variance": float(variance),
        "max_epochs": schedule.max_epochs,
        "patience": schedule.patience,
        "shuffle": config.shuffle,
        "recipe": recipe.to_dict(),
        "run": run,
        "memorised_epoch": memorised_epoch,
    }


def check_relabelling(relabelling: Relabelling, settings: dict, n_train: int, where) -> None:
    """Raise ``ValueError`` (naming ``where``) unless the relabels fit ``settings``."""
    problems = []
    if relabelling.subspaces != settings["subspaces"]:
        problems.append(f"subspaces {relabelling.subspaces!r}")
    if relabelling.split_seed != settings["split_seed"]:
        problems.append(f"split_seed {relabelling.split_seed}")
    if float(relabelling.variance) != settings["variance"]:
        problems.append(f"variance {relabelling.variance}")
    if relabelling.relabels.shape != (n_train,):
        problems.append(f"relabels of shape {relabelling.relabels.shape}")
    if problems:
        raise ValueError(
            f"{where}: relabelling with {', '.join(problems)} does not fit this retrain "
            f"(subspaces {settings['subspaces']!r}, split_seed {settings['split_seed']}, "
            f"variance {settings['variance']}, {n_train} training points)"
        )
