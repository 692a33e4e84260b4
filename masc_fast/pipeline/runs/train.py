"""Training runs with the paper's recipes: one directory per run, resumable after a kill.

:func:`train_run` resolves a :class:`RunConfig` (model and dataset names, corruption degree,
seed) into a model, data and noisy labels and hands them to :func:`train_prepared`
(:mod:`masc_fast.pipeline.runs.train_prepared`, re-exported here), which trains by SPEC §4 (cross-entropy; stop
at the end of the first epoch whose running train accuracy on the corrupted labels reaches the
recipe's target, or at the cap) and keeps the run directory up to date after every epoch.

Run directory
-------------
::

    <run_dir>/
      config.json            RunConfig.to_dict(); its presence marks a run directory
      recipe.json            {"format", "recipe": the resolved TrainingRecipe, "masc_fast",
                             "torch"}: versions that ran it; checked on resume
      labels.npz             arrays true and corrupted (int64, training set, dataset order)
                             and scalars p, recipe, seed, strict; written before epoch 1,
                             verified on resume
      metrics.csv            epoch, train_loss, train_accuracy, train_accuracy_true,
                             test_accuracy, seconds; one row per epoch (1-based) plus row 0,
                             the initialised model; rewritten atomically after every epoch
      steps.csv              step, epoch, loss: every optimiser step's batch loss (Zhang et
                             al.'s learning curves); rewritten with metrics.csv
      checkpoints/
        init.safetensors     the initialised model, before any step (random-init control)
        epoch_0010.safetensors ...  every ``checkpoint_every`` epochs
        last.safetensors     after every epoch: model, optimizer, RNG states, metrics so far,
                             best so far; what ``resume`` continues from
        best.safetensors     highest test accuracy over epochs >= 1 (first on ties), its epoch
                             in the metadata (the early-stopping comparison)
        final.safetensors    the model when training stopped
      memorization/          with ``memorization=True``: epoch_NNNN.npz, Arpit et al.'s
                             per-example measures after each epoch
                             (:mod:`masc_fast.pipeline.runs.memorization`)
      summary.json           written when the run is finished (see :class:`RunSummary`)

``train_accuracy`` and ``train_accuracy_true`` are running accuracies of the same training
pass (weights change during the epoch) against the corrupted and the true labels;
``test_accuracy`` is measured in eval mode on the true test labels; ``seconds`` is the wall
time of the epoch's training pass and test evaluation. Row 0 holds eval-mode accuracies (and
loss) of the initialised model, as the authors' MLP CSVs do. Every file is
written atomically (temporary file, then ``os.replace``). ``last.safetensors`` is the commit
point of an epoch; the periodic and best checkpoints and ``metrics.csv`` are derived from it
and are rewritten on resume, so a kill at any instant loses at most the epoch in progress.
All checkpoints except ``last`` hold the model only (see :mod:`masc_fast.pipeline.runs.checkpoints`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from masc_fast._io import read_json
from masc_fast.pipeline.runs.config import RunConfig, RunSummary, parse_regularization
from masc_fast.pipeline.runs.files import METRIC_COLUMNS, run_paths
from masc_fast.pipeline.runs.train_prepared import train_device, train_prepared

__all__ = [
    "METRIC_COLUMNS",
    "RunConfig",
    "RunSummary",
    "train_device",
    "train_prepared",
    "train_run",
]


#: Batch size of the evaluation passes (no gradients, so larger than any training batch).
_EVAL_BATCH_SIZE = 512


def _build_model(config: RunConfig, info) -> nn.Module:
    """Seeded model construction (a seam tests replace with a smaller model)."""
    from masc_fast.models import build_model

    dropout = parse_regularization(config.regularization).get("dropout", 0.0)
    torch.manual_seed(config.seed)
    return build_model(
        config.model, input_shape=info.input_shape, num_classes=info.num_classes, dropout=dropout
    )


def train_run(
    config: RunConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunSummary:
    """Train ``config.model`` on ``config.dataset`` with labels corrupted to degree ``config.p``.

    Loads the data (:func:`masc_fast.data.load_dataset`), draws the noisy training labels
    (:func:`masc_fast.data.corruption.noisy_labels` with ``config.noise_recipe``, ``config.seed``
    and the dataset's ``strict_corruption``), seeds torch with ``config.seed`` right before
    :func:`masc_fast.models.build_model` (same config, same initial weights), and trains with
    the resolved recipe (:meth:`RunConfig.recipe`) into ``run_dir``. Shuffled epochs follow
    ``BatchLoader.set_epoch(epoch)`` with seed ``config.seed``, so a resumed run continues
    with the orders an uninterrupted run would have used.

    Parameters
    ----------
    config : RunConfig
    run_dir : str or os.PathLike
        Must be empty or absent unless ``resume``. Layout in the module docstring.
    resume : bool, default False
        Continue from ``checkpoints/last.safetensors`` (model, optimizer, epoch, RNG states,
        metrics and best so far); a finished run (``summary.json`` present) is returned as
        is, without training; an empty directory starts a new run.
    progress : bool, default True
        progress bars over epochs (train and test accuracy) and over each epoch's batches.
    on_epoch : callable, optional
        Called with each new metrics row (a dict keyed by :data:`METRIC_COLUMNS`).

    Returns
    -------
    RunSummary

    Raises
    ------
    FileExistsError
        If ``run_dir`` is not empty and ``resume`` is false.
    ValueError
        If resuming a run whose configuration or labels differ from these; on an unknown
        model/dataset combination without a full set of recipe overrides.
    FileNotFoundError
        If the dataset is not under ``config.data_root`` and ``config.download`` is false.

    Examples
    --------
    >>> import tempfile
    >>> config = RunConfig("mlp", "digits", p=0.2, max_epochs=1)
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     summary = train_run(config, folder, progress=False)
    >>> summary.epochs  # doctest: +SKIP
    1
    """
    from masc_fast.data import BatchLoader, dataset_info, load_dataset
    from masc_fast.data.corruption import noisy_labels
    from masc_fast.pipeline.ranks import current_group, shard
    from masc_fast.pipeline.runs.loading import run_inputs
    from masc_fast.pipeline.runs.train_prepared import TRAIN_RESUME, run_dir_state

    run_dir = Path(run_dir)
    recipe = config.recipe()
    group = current_group(TRAIN_RESUME)
    if run_dir_state(run_dir, config.to_dict(), recipe, resume, group) == "finished":
        return RunSummary.from_dict(read_json(run_paths(run_dir)["summary"]))

    info = dataset_info(config.dataset)
    train, test = load_dataset(
        config.dataset, root=config.data_root, download=config.download, progress=progress
    )
    train, test = run_inputs(config, train, test)
    true_labels = train.labels.numpy()
    corrupted = noisy_labels(
        true_labels,
        config.p,
        info.num_classes,
        recipe=config.noise_recipe,
        seed=config.seed,
        strict=info.strict_corruption,
    )
    device = train_device(config.device, config.amp)
    if group is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # torchrun's LOCAL_RANK
    model = _build_model(config, info)
    loader_device = device if device.type == "cuda" else None
    part = shard()  # under torchrun: this rank's part of every batch
    train_loader = BatchLoader(
        train,
        corrupted,
        true_labels,
        batch_size=recipe.batch_size,
        shuffle=config.shuffle,
        seed=config.seed,
        device=loader_device,
        **part,
    )
    eval_size = max(_EVAL_BATCH_SIZE, recipe.batch_size)
    train_eval_loader = BatchLoader(
        train, corrupted, true_labels, batch_size=eval_size, device=loader_device, **part
    )
    test_loader = BatchLoader(test, batch_size=eval_size, device=loader_device, **part)
    regularizers = parse_regularization(config.regularization)
    recorder = None
    if config.memorization:
        from masc_fast.pipeline.runs.memorization import MemorizationRecorder

        subset = slice(0, min(config.memorization_examples, len(train)))
        recorder = MemorizationRecorder(
            Path(run_dir) / "memorization",
            train.inputs(subset),
            torch.as_tensor(corrupted[subset], dtype=torch.int64),
            radius=config.csr_radius,
        )
    noise = {
        "p": config.p,
        "recipe": config.noise_recipe,
        "seed": config.seed,
        "strict": info.strict_corruption,
    }
    return train_prepared(
        model,
        run_dir,
        train_loader=train_loader,
        test_loader=test_loader,
        train_eval_loader=train_eval_loader,
        true_labels=true_labels,
        corrupted_labels=corrupted,
        noise=noise,
        recipe=recipe,
        config=config.to_dict(),
        checkpoint_every=config.checkpoint_every,
        device=device,
        compile=config.compile,
        amp=config.amp,
        resume=resume,
        progress=progress,
        on_epoch=on_epoch,
        memorization=recorder,
        weight_decay=regularizers.get("weight_decay", 0.0),
        input_noise=regularizers.get("input_noise", 0.0),
        group=group,
    )
