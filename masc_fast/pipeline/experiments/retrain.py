"""Retraining a memorised model on its MASC relabels (SPEC §6), resumable after a kill.

:func:`retrain_run` takes a finished training run, relabels its training set with MASC
(:mod:`masc_fast.pipeline.experiments.relabel`: best layer on 20 % of the test set, chosen separately for
corrupted-label and true-label subspaces) and fine-tunes the memorised weights on the new
labels: a fresh optimiser of the run's kind and learning rate (:meth:`RunConfig.recipe`), the
same batch size and the run's own ``shuffle`` setting (the authors did not shuffle). After each
epoch it records the running train accuracy against the new labels and the accuracies on the
80 % and 20 % parts of the test set. Two variants (:data:`VARIANTS`):

* ``"retrain"``: up to 30 epochs with early stopping on the 20 % accuracy, patience 3
  (:func:`patience_step`); the epoch that triggers the stop is trained and kept, and the best
  weights are not restored, as in the authors' loop;
* ``"retrain-10"``: 10 epochs, no early stopping.

Each variant × subspace set fine-tunes in its own work directory,
``<run_dir>/retrain/<variant>-<subspaces>/``, laid out and checked by
:mod:`masc_fast.pipeline.experiments.retrain_files`; the epochs themselves are :mod:`masc_fast.pipeline.experiments.fine_tune`. Every
file is written atomically and ``last.safetensors`` is the commit point of an epoch, so a killed
retrain loses at most the epoch in progress and, resumed, ends with the weights and metrics an
uninterrupted one would have.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from masc_fast._io import atomic_write_text
from masc_fast.pipeline.experiments.fine_tune import (
    VARIANTS,
    RetrainVariant,
    early_stop_epoch,
    fine_tune,
    patience_step,
)
from masc_fast.pipeline.experiments.relabel import (
    DEFAULT_SPLIT_SEED,
    SUBSPACE_SETS,
    Relabelling,
    final_checkpoint,
    load_trained_run,
    relabel_analysis,
    relabel_trained,
)
from masc_fast.pipeline.experiments.relabel_rules import check_choices
from masc_fast.pipeline.experiments.retrain_files import (
    RETRAIN_METRIC_COLUMNS,
    check_relabelling,
    remove_stale_tmp,
    settings_document,
    work_paths,
    work_state,
)
from masc_fast.pipeline.ranks import barrier, is_main, on_main
from masc_fast.pipeline.results_table import tidy_rows
from masc_fast.pipeline.runs.checkpoints import checkpoint_metadata
from masc_fast.pipeline.runs.files import read_metrics
from masc_fast.pipeline.runs.loading import load_config, load_labels

__all__ = [
    "RETRAIN_METRIC_COLUMNS",
    "VARIANTS",
    "RetrainVariant",
    "early_stop_epoch",
    "patience_step",
    "retrain_rows",
    "retrain_run",
]


def retrain_rows(
    config, variant: str, relabelling: Relabelling, metrics: list[dict], true_labels, corrupted
) -> pd.DataFrame:
    """A retrain's tidy result rows (issue-7 schema, "Retraining").

    Per metrics row (epoch 0 = the memorised model): ``metric="accuracy"`` on ``test80`` and
    ``test20`` against the true labels and on ``train`` against the relabels
    (``labels="relabel"``, the running accuracy of that epoch). Then one row each, at epoch 0,
    split ``train``, labels ``""``: ``wrong_corrected_pct``, ``correct_broken_pct``,
    ``wrong_reduction`` (:func:`masc_fast.pipeline.experiments.relabel.relabel_analysis`) and ``best_layer_test20``
    (the chosen layer's MASC accuracy on the 20 % split). ``layer`` is the chosen layer,
    ``subspaces`` the relabelling's, ``experiment`` the variant; extra column ``epoch``.

    Parameters
    ----------
    config : RunConfig
        The training run's configuration (model, dataset, p, seed).
    variant : str
    relabelling : Relabelling
    metrics : list of dict
        Rows with :data:`RETRAIN_METRIC_COLUMNS`.
    true_labels, corrupted : array_like of int, shape (n_train,)

    Returns
    -------
    pandas.DataFrame
    """
    splits = (
        ("test80", "true", "test80_accuracy"),
        ("test20", "true", "test20_accuracy"),
        ("train", "relabel", "train_accuracy"),
    )
    records = [
        {
            "split": split,
            "labels": labels,
            "metric": "accuracy",
            "value": row[key],
            "epoch": row["epoch"],
        }
        for row in metrics
        for split, labels, key in splits
    ]
    analysis = relabel_analysis(true_labels, corrupted, relabelling.relabels)
    analysis["best_layer_test20"] = relabelling.test20_accuracy
    records += [
        {"split": "train", "labels": "", "metric": name, "value": value, "epoch": 0}
        for name, value in analysis.items()
    ]
    return tidy_rows(
        pd.DataFrame(records),
        model=config.model,
        dataset=config.dataset,
        p=float(config.p),
        seed=config.seed,
        experiment=variant,
        layer=relabelling.layer,
        subspaces=relabelling.subspaces,
    )


def _check_override(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def retrain_run(
    run_dir: str | os.PathLike,
    *,
    variants: Sequence[str] = tuple(VARIANTS),
    subspaces: Sequence[str] = SUBSPACE_SETS,
    split_seed: int = DEFAULT_SPLIT_SEED,
    variance: float = 0.99,
    device: torch.device | str | None = None,
    retrain_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    max_epochs: int | None = None,
    patience: int | None = None,
    relabellings: Mapping[str, Relabelling] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    batch_size: int = 512,
    backend: str = "auto",
    memory_budget: int | str | None = None,
) -> pd.DataFrame:
    """Relabel a memorised run's training set with MASC and fine-tune on it (SPEC §6).

    For each subspace set, the relabels come from the best layer on the 20 % split
    (:func:`masc_fast.pipeline.experiments.relabel.compute_relabels`; one probe pass serves every variant and both
    subspace sets, and a work directory that already holds ``relabels.npz`` reuses it). For
    each variant × subspace set, the run's final weights are fine-tuned as described in the
    module docstring, in ``retrain_dir/<variant>-<subspaces>/``.

    Parameters
    ----------
    run_dir : path
        A finished training run (:func:`masc_fast.pipeline.runs.train.train_run`).
    variants : sequence of {"retrain", "retrain-10"}, default both
    subspaces : sequence of {"corrupted", "true"}, default both
        Which relabels: from subspaces fitted with the corrupted or the true training labels.
    split_seed : int, default 2345
        ``random_state`` of the 80/20 test split.
    variance : float, default 0.99
        Explained-variance threshold of the subspaces.
    device : torch.device or str, optional
        Default: CUDA if available, else the CPU. Fine-tuning runs in full precision, eager.
    retrain_dir : path, optional
        Parent of the work directories; default ``run_dir/retrain``.
    resume : bool, default False
        Continue killed retrains from ``checkpoints/last.safetensors`` (and return finished
        ones as they are); without it every work directory must be empty or absent.
    progress : bool, default True
        progress bars.
    max_epochs : int, optional
        Override of every variant's epoch cap (quick looks, tests); recorded in
        ``settings.json``.
    patience : int, optional
        Override of the early-stopping patience of variants that stop early.
    relabellings : mapping of subspaces to Relabelling, optional
        Relabels computed beforehand (:func:`masc_fast.pipeline.experiments.relabel.compute_relabels` with the
        same ``split_seed`` and ``variance``); skips the probe.
    on_epoch : callable, optional
        Called with each new metrics row (plus ``variant`` and ``subspaces``) after the epoch
        is committed.
    batch_size, backend, memory_budget
        Of the probe and relabel passes (:func:`masc_fast.probe`).

    Returns
    -------
    pandas.DataFrame
        Tidy rows (:func:`retrain_rows`) of every variant × subspace set, in that order.

    Raises
    ------
    FileNotFoundError
        If the run or its final checkpoint is missing.
    FileExistsError
        If a work directory is not empty and ``resume`` is false.
    ValueError
        Unknown variant or subspace names; a resumed directory whose settings or relabels
        differ from these.

    Examples
    --------
    >>> rows = retrain_run("runs/mlp-digits-p0.4", variants=["retrain"])  # doctest: +SKIP
    >>> rows.query("split == 'test80'").groupby("subspaces")["value"].last()  # doctest: +SKIP
    """
    variants = check_choices(variants, tuple(VARIANTS), "variants")
    subspaces = check_choices(subspaces, SUBSPACE_SETS, "subspaces")
    max_epochs = _check_override(max_epochs, "max_epochs")
    patience = _check_override(patience, "patience")
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    recipe = config.recipe()
    memorised_epoch = checkpoint_metadata(final_checkpoint(run_dir))["epoch"]
    true_labels, corrupted = (labels.numpy() for labels in load_labels(run_dir))
    root = run_dir / "retrain" if retrain_dir is None else Path(retrain_dir)

    jobs = []  # (schedule, subspaces, work dir, settings, state), all checked before any work
    for name in variants:
        base = VARIANTS[name]
        schedule = RetrainVariant(
            name,
            base.max_epochs if max_epochs is None else max_epochs,
            base.patience if patience is None or base.patience is None else patience,
        )
        for which in subspaces:
            work = root / f"{name}-{which}"
            settings = settings_document(
                config, recipe, schedule, which, split_seed, variance, memorised_epoch
            )
            jobs.append((schedule, which, work, settings))
    # under torchrun rank 0 reads the work folders and every rank follows its answer
    states = on_main(
        lambda: [work_state(work, settings, resume) for _, _, work, settings in jobs],
        "reading the retrain folders on rank 0",
    )
    jobs = [(*job, state) for job, state in zip(jobs, states)]

    stored = {}
    for _, _, work, settings, state in jobs:
        path = work_paths(work)["relabels"]
        if state != "fresh" and path.is_file():
            stored[work] = Relabelling.load(path)
            check_relabelling(stored[work], settings, len(true_labels), path)
    needed = sorted(
        {which for _, which, work, _, state in jobs if state != "finished" and work not in stored}
        - set(relabellings or {}),
        key=SUBSPACE_SETS.index,
    )
    trained = None
    if any(state != "finished" for *_, state in jobs):
        trained = load_trained_run(run_dir, device=device, progress=progress)
    computed = dict(relabellings or {})
    if needed:
        computed.update(
            relabel_trained(
                trained,
                subspaces=needed,
                split_seed=split_seed,
                variance=variance,
                batch_size=batch_size,
                backend=backend,
                memory_budget=memory_budget,
                progress=progress,
            )
        )

    frames = []
    for schedule, which, work, settings, state in jobs:
        paths = work_paths(work)
        if work in stored:
            relabelling = stored[work]
            given = (relabellings or {}).get(which)
            if given is not None and not (
                given.layer == relabelling.layer
                and np.array_equal(given.relabels, relabelling.relabels)
            ):
                raise ValueError(
                    f"relabellings[{which!r}] differs from the relabels stored in "
                    f"{paths['relabels']}; a resumed retrain keeps its own relabels"
                )
        else:
            relabelling = computed[which]
            check_relabelling(relabelling, settings, len(true_labels), f"relabellings[{which!r}]")
        if state == "finished":
            metrics = read_metrics(paths["metrics"])
        else:
            if is_main():
                remove_stale_tmp(work)
                atomic_write_text(paths["settings"], json.dumps(settings, indent=2) + "\n")
                if work not in stored:
                    relabelling.save(paths["relabels"])
            barrier("waiting for rank 0 to write the retrain's settings")
            metrics = fine_tune(
                trained,
                work,
                relabelling,
                schedule,
                state=state,
                progress=progress,
                on_epoch=on_epoch,
            )
        frames.append(
            retrain_rows(config, schedule.name, relabelling, metrics, true_labels, corrupted)
        )
    return pd.concat(frames, ignore_index=True)
