"""The MASC experiments on trained runs, as rows of the tidy results table (SPEC §5.5, §7.1).

* ``exp1``: subspaces from the corrupted training labels the model was trained on, scored on
  the training set against the corrupted and the true labels, and on the test set.
* ``exp2``: subspaces from the true training labels of the same memorised model.
* ``exp3``: the p = 0 model (a model that generalises) probed with labels corrupted *post hoc*
  at p with the run's own noise recipe: can MASC "memorise" a random relabelling?
* ``random-init``: the run's initialised, untrained weights (``checkpoints/init``), probed with
  its corrupted and true labels: the control showing that training made the subspaces.
* ``early-stop``: the checkpoint with the best test accuracy (``checkpoints/best``), the
  early-stopping comparison.

exp1 and exp2 come out of one probe pass (the probe fits both label sets at once); its tables
are cached under ``run_dir/probes/`` so the second experiment costs nothing. Activations are
taken in ``eval()`` mode; ``bn_train_mode=True`` reproduces the authors' ResNet-18 extraction,
where every BatchNorm normalised each sample on its own (:mod:`masc_fast.models.batchnorm`).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from masc_fast._io import atomic_write_text, read_json
from masc_fast.pipeline.experiments.settings import ProbeSettings
from masc_fast.pipeline.results_table import RESULT_COLUMNS
from masc_fast.pipeline.runs.loading import (
    checkpoint_epoch,
    load_config,
    load_labels,
    load_run,
    resolve_device,
)

__all__ = [
    "MASC_EXPERIMENTS",
    "probe_rows",
    "probe_run",
    "probe_seconds",
    "probe_tables",
    "run_masc_experiment",
]

logger = logging.getLogger(__name__)

#: The MASC probes of this module (the other experiments: :mod:`masc_fast.pipeline.experiments`).
MASC_EXPERIMENTS = ("exp1", "exp2", "exp3", "random-init", "early-stop")

#: Which checkpoint of a run each experiment probes, and which subspaces it reports.
_CHECKPOINT = {
    "exp1": "final",
    "exp2": "final",
    "exp3": "final",
    "random-init": "init",
    "early-stop": "best",
}
_SUBSPACES = {
    "exp1": ("corrupted",),
    "exp2": ("true",),
    "exp3": ("corrupted",),
    "random-init": ("corrupted", "true"),
    "early-stop": ("corrupted", "true"),
}
_CACHE_VERSION = 1


def probe_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "final",
    labels: np.ndarray | None = None,
    settings: ProbeSettings | None = None,
    activation_dir: str | Path | None = None,
):
    """Probe one checkpoint of a training run with MASC on every paper layer.

    Parameters
    ----------
    run_dir : path
        A directory written by :func:`masc_fast.pipeline.runs.train.train_run`.
    checkpoint : {"final", "best", "init"} or a checkpoint file stem
        Which weights to load from ``run_dir/checkpoints``.
    labels : numpy.ndarray of int, shape (n_train,), optional
        Training labels to fit the "corrupted" subspaces on; default the run's own corrupted
        labels (``labels.npz``). The true labels always ride along for the "true" subspaces.
    settings : ProbeSettings, optional
    activation_dir : path, optional
        Where the probe keeps its shards and fit-pass checkpoint; a probe killed in its fit
        pass continues from that checkpoint when called again with the same directory (and
        the same batch size). Default: a temporary directory, nothing to resume.

    Returns
    -------
    masc_fast.ProbeResult

    Raises
    ------
    FileNotFoundError
        If the run or the checkpoint is missing (the message names the path).
    ValueError
        If the run's true labels do not match the dataset as loaded now.
    """
    from masc_fast.data import BatchLoader
    from masc_fast.models.batchnorm import batchnorm_per_sample
    from masc_fast.pipeline.ranks import current_group, probe_distributed, shard
    from masc_fast.probe import probe
    from masc_fast.probing.distributed import rank_folder
    from masc_fast.probing.fit_checkpoint import FitCheckpoint

    settings = settings or ProbeSettings()
    device = resolve_device(settings.device)
    _, model, train, test, true_labels, corrupted = load_run(
        run_dir, checkpoint, device, progress=settings.progress
    )
    fit_labels = corrupted if labels is None else torch.as_tensor(labels)
    part = shard()  # under torchrun: this rank's part of every batch
    train_loader = BatchLoader(
        train,
        fit_labels,
        true_labels=true_labels,
        batch_size=settings.batch_size,
        device=device,
        **part,
    )
    test_loader = BatchLoader(test, batch_size=settings.batch_size, device=device, **part)
    resume = False
    if activation_dir is not None:
        resume = FitCheckpoint(rank_folder(activation_dir, current_group())).exists()
    mode = batchnorm_per_sample(model) if settings.bn_train_mode else nullcontext()
    with mode:
        return probe(
            model,
            train_loader,
            {"test": test_loader},
            num_classes=train.info.num_classes,
            variance=settings.variance if settings.thresholds is None else None,
            thresholds=settings.thresholds,
            device=device,
            backend=settings.backend,
            memory_budget=settings.memory_budget,
            progress=settings.progress,
            activation_dir=activation_dir,
            resume=resume,
            distributed=probe_distributed(),
        )


def probe_tables(run_dir: Path, checkpoint: str, labels, tag: str, settings: ProbeSettings):
    """(table, components, model accuracy, layer seconds) of a probe, from the run's cache when
    present (a cache from before per-layer times lacks ``layer_seconds.csv`` and is redone)."""
    from masc_fast.pipeline.ranks import agree, is_main

    folder = run_dir / "probes" / f"{checkpoint}-{tag}-{settings.cache_key()}"
    names = ("table", "components", "model_accuracy", "layer_seconds")
    cached = all((folder / f"{name}.csv").exists() for name in names)
    if agree(cached, f"whether {folder} holds the probe's tables"):
        logger.info("reusing probe tables in %s", folder)
        return tuple(pd.read_csv(folder / f"{name}.csv") for name in names)
    started = time.perf_counter()
    result = probe_run(
        run_dir, checkpoint=checkpoint, labels=labels, settings=settings,
        activation_dir=folder / "store",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    tables = (result.table, result.components, result.model_accuracy, result.layer_seconds)
    if not is_main():  # rank 0 writes the cache
        return tables
    for name, frame in zip(names, tables):  # each atomic; a partial cache is recomputed
        atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))
    record = {**asdict(settings), "cache_version": _CACHE_VERSION, "probe_seconds": seconds}
    atomic_write_text(folder / "settings.json", json.dumps(record, indent=1))
    return tables


def probe_seconds(run_dir: Path, checkpoint: str, tag: str, settings: ProbeSettings) -> float:
    """Wall seconds of the probe whose tables :func:`probe_tables` cached (load, forward
    passes, fit and scoring), NaN for a cache written before they were recorded."""
    record = run_dir / "probes" / f"{checkpoint}-{tag}-{settings.cache_key()}" / "settings.json"
    if not record.is_file():
        return float("nan")
    return float(read_json(record).get("probe_seconds", float("nan")))


def probe_rows(
    table, components, model_accuracy, layer_seconds, subspaces, constants
) -> pd.DataFrame:
    """Accuracy, component, per-class component, model-accuracy and per-layer time rows in the
    results-table schema.

    MASC and component rows keep the probe's own ``variance`` (one set per threshold); the
    ``variance`` constant fills the rows without one (model accuracy, times): the threshold
    for a single-threshold probe, NaN ("any threshold") for a sweep.
    """
    table = table[table["subspaces"].isin(subspaces)]
    accuracy = table.assign(metric="accuracy", value=table["accuracy"])
    components = components[components["subspaces"].isin(subspaces)]
    if "variance" not in components:  # a cache from before the threshold sweep
        components = components.assign(variance=constants["variance"])
    totals = (
        components.groupby(["layer", "subspaces", "variance"], sort=False)["components"]
        .sum()
        .reset_index()
        .assign(split="train", labels="", metric="components")
        .rename(columns={"components": "value"})
    )
    per_class = components.assign(
        split="train", labels="", metric="class_components", value=components["components"]
    )[["layer", "subspaces", "variance", "class", "split", "labels", "metric", "value"]]
    model = model_accuracy.assign(
        layer="model", subspaces="", metric="model_accuracy", value=model_accuracy["accuracy"]
    )
    times = layer_seconds[layer_seconds["subspaces"].isin(subspaces)]
    times = times.assign(
        metric=times["phase"].map({"build": "build_seconds", "inference": "inference_seconds"}),
        split=times["split"].where(times["phase"] == "inference", "train"),
        labels="",
        value=times["seconds"],
    )[["layer", "subspaces", "split", "labels", "metric", "value"]]
    rows = pd.concat([accuracy, totals, per_class, model, times], ignore_index=True)
    for name, value in constants.items():
        if name == "variance" and name in rows:
            rows[name] = rows[name].astype(float).fillna(value)
        else:
            rows[name] = value
    rows["class"] = rows["class"].astype("Int64")  # whole numbers; <NA> off class rows
    extra = ("randomize", "checkpoint", "epoch", "variance", "n", "class")
    extra = [name for name in extra if name in rows]
    return rows[list(RESULT_COLUMNS) + extra].reset_index(drop=True)


def run_masc_experiment(
    run_dir: Path, experiment: str, *, p: float | None, settings: ProbeSettings
) -> pd.DataFrame:
    """One MASC experiment (:data:`MASC_EXPERIMENTS`) on one training run, as tidy rows.

    What :func:`masc_fast.pipeline.experiments.run_experiment` runs for these names (its
    parameters): ``p`` is ``exp3``'s post-hoc corruption degree, drawn with the run's noise
    recipe and seed; the others take the run's own p.

    Returns
    -------
    pandas.DataFrame
        :data:`masc_fast.pipeline.results_table.RESULT_COLUMNS` plus ``checkpoint``, ``epoch``,
        ``variance``, ``n`` and ``class``: MASC accuracy per layer, subspaces, split and scored
        labels (per threshold with ``settings.thresholds``); total components per layer
        (``components``) and per class (``class_components``); the model's own accuracy
        (``layer="model"``); each layer's fit (``build_seconds``) and scoring time per split
        (``inference_seconds``).
    """
    from masc_fast.data import dataset_info
    from masc_fast.data.corruption import noisy_labels

    config = load_config(run_dir)
    labels, tag = None, "run"
    if experiment == "exp3":
        if config.p != 0:
            raise ValueError(
                f"exp3 probes a model trained at p = 0; run {run_dir} has p = {config.p}"
            )
        if p is None:
            raise ValueError("exp3 needs the post-hoc corruption degree p")
        info = dataset_info(config.dataset)
        true, _ = load_labels(run_dir)
        labels = noisy_labels(
            true.numpy(),
            p,
            info.num_classes,
            recipe=config.noise_recipe,
            seed=config.seed,
            strict=info.strict_corruption,
        )
        tag = f"posthoc-p{p:g}"
    elif p is not None and float(p) != float(config.p):
        raise ValueError(f"{experiment} uses the run's own p = {config.p}, got p = {p}")
    checkpoint = _CHECKPOINT[experiment]
    tables = probe_tables(run_dir, checkpoint, labels, tag, settings)
    constants = {
        **config.run_columns(),
        "p": float(config.p if p is None else p),
        "experiment": experiment,
        "checkpoint": checkpoint,
        "epoch": checkpoint_epoch(run_dir, checkpoint),
        # rows without a threshold of their own: a sweep's apply to any threshold
        "variance": settings.variance if settings.thresholds is None else float("nan"),
    }
    return probe_rows(*tables, _SUBSPACES[experiment], constants)
