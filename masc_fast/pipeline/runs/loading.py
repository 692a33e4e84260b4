"""Load a finished training run: its config, a checkpoint's model, the data and both label sets.

One place that turns a run directory (:mod:`masc_fast.pipeline.runs.train`) back into the objects every
analysis of it needs, so the MASC experiments, the baselines and retraining all see the same
model, the same data and the same labels. :func:`load_run` rebuilds everything; its pieces
(:func:`load_config`, :func:`checkpoint_path`, :func:`load_labels`) serve callers that need
less, with the same checks and messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from masc_fast._io import read_json

__all__ = [
    "LoadedRun",
    "checkpoint_epoch",
    "checkpoint_path",
    "load_config",
    "load_labels",
    "load_run",
    "resolve_device",
    "run_inputs",
]


class LoadedRun(NamedTuple):
    """What :func:`load_run` returns; unpacks as the 6-tuple of its fields.

    Attributes
    ----------
    config : masc_fast.pipeline.runs.config.RunConfig
    model : torch.nn.Module
        The checkpoint's weights, on the requested device, in ``eval()`` mode.
    train, test : masc_fast.data.LabelledSplit
        The dataset as loaded now (true labels in dataset order), its inputs randomized as
        the run's were (:func:`run_inputs`).
    true_labels, corrupted_labels : torch.Tensor, int64, shape (n_train,), CPU
        From ``labels.npz``; ``true_labels`` equals ``train.labels`` (checked).
    """

    config: object
    model: nn.Module
    train: object
    test: object
    true_labels: torch.Tensor
    corrupted_labels: torch.Tensor


def run_inputs(config, train, test):
    """The run's ``(train, test)`` splits as its model sees them: the first
    ``config.train_examples`` training examples when it is set, then ``config.randomize``'s
    input randomization applied from ``config.seed``
    (:func:`masc_fast.data.randomization.randomize_split`), so training, resuming and probing a
    run all read the same inputs."""
    from masc_fast.data.randomization import randomize_split

    if config.train_examples is not None:
        if config.train_examples > len(train):
            raise ValueError(
                f"train_examples={config.train_examples} but dataset {config.dataset!r} has "
                f"{len(train)} training examples"
            )
        train = train.head(int(config.train_examples))
    if config.randomize == "none":
        return train, test
    return (
        randomize_split(train, config.randomize, seed=config.seed),
        randomize_split(test, config.randomize, seed=config.seed),
    )


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` means CUDA when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_epoch(run_dir: str | os.PathLike, checkpoint: str) -> int:
    """The epoch a run's checkpoint holds (0 = initialised), read from ``summary.json``.

    Parameters
    ----------
    run_dir : path
        A finished training run.
    checkpoint : {"final", "best", "init"}

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For another checkpoint name.
    FileNotFoundError
        If the run has no ``summary.json`` (it is not finished).
    """
    if checkpoint == "init":
        return 0
    if checkpoint not in ("final", "best"):
        raise ValueError(f"checkpoint must be 'final', 'best' or 'init', got {checkpoint!r}")
    summary = read_json(Path(run_dir) / "summary.json")
    return int(summary["best_epoch"] if checkpoint == "best" else summary["epochs"])


def load_config(run_dir: str | os.PathLike):
    """A training run's :class:`~masc_fast.pipeline.runs.config.RunConfig`, from its ``config.json``.

    Parameters
    ----------
    run_dir : path
        A directory written by :func:`masc_fast.pipeline.runs.train.train_run` (finished or not).

    Returns
    -------
    masc_fast.pipeline.runs.config.RunConfig

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` has no ``config.json`` (it is not a training run).

    Example
    -------
    >>> load_config("runs/mlp-digits").model  # doctest: +SKIP
    'mlp'
    """
    from masc_fast.pipeline.runs.config import RunConfig

    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run: it has no config.json")
    return RunConfig.from_dict(read_json(config_path))


def checkpoint_path(run_dir: str | os.PathLike, checkpoint: str) -> Path:
    """``run_dir/checkpoints/<checkpoint>.safetensors``, which must exist.

    Parameters
    ----------
    run_dir : path
        A training run.
    checkpoint : str
        Stem of the checkpoint file (``final``, ``best``, ``init``, ``epoch_0010``, ...).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the file is missing; the message lists the checkpoints the run does have.

    Example
    -------
    >>> checkpoint_path("runs/mlp-digits", "best").name  # doctest: +SKIP
    'best.safetensors'
    """
    run_dir = Path(run_dir)
    weights = run_dir / "checkpoints" / f"{checkpoint}.safetensors"
    if not weights.exists():
        present = sorted(path.name for path in (run_dir / "checkpoints").glob("*.safetensors"))
        raise FileNotFoundError(
            f"run {run_dir} has no checkpoint {weights.name} (has: {present}); "
            f"is the training run finished?"
        )
    return weights


def load_labels(run_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The true and the corrupted training labels a run was trained with (``labels.npz``).

    Parameters
    ----------
    run_dir : path
        A training run (its labels are written before the first epoch).

    Returns
    -------
    true_labels, corrupted_labels : torch.Tensor, int64, shape (n_train,), CPU
        In dataset order.

    Raises
    ------
    FileNotFoundError
        If the run has no ``labels.npz``.

    Example
    -------
    >>> true, corrupted = load_labels("runs/mlp-digits-p0.4")  # doctest: +SKIP
    >>> float((true != corrupted).float().mean())  # doctest: +SKIP
    0.36
    """
    with np.load(Path(run_dir) / "labels.npz", allow_pickle=False) as recorded:
        true_labels = torch.as_tensor(recorded["true"]).to(torch.int64)
        corrupted_labels = torch.as_tensor(recorded["corrupted"]).to(torch.int64)
    return true_labels, corrupted_labels


def load_run(
    run_dir: str | os.PathLike,
    checkpoint: str = "final",
    device: torch.device | str | None = None,
    *,
    progress: bool = True,
) -> LoadedRun:
    """Rebuild a training run's model at one checkpoint, with its data and labels.

    Parameters
    ----------
    run_dir : path
        A directory written by :func:`masc_fast.pipeline.runs.train.train_run`.
    checkpoint : str, default "final"
        Stem of a file in ``run_dir/checkpoints`` (``final``, ``best``, ``init``, ...).
    device : torch.device or str, optional
        Where the model goes; ``None``: CUDA when present, else the CPU.
    progress : bool, default True
        Progress bars while a dataset is read or prepared.

    Returns
    -------
    LoadedRun
        ``(config, model, train, test, true_labels, corrupted_labels)``; the model is in
        ``eval()`` mode.

    Raises
    ------
    FileNotFoundError
        If the run, its ``config.json`` or the checkpoint is missing (the message names it).
    ValueError
        If the run's true labels do not match the dataset as loaded now.

    Example
    -------
    >>> config, model, train, test, true, corrupted = load_run("runs/mlp-digits")  # doctest: +SKIP
    """
    from masc_fast.data import load_dataset
    from masc_fast.models import build_model
    from masc_fast.pipeline.runs.checkpoints import load_model_weights

    run_dir = Path(run_dir)
    config = load_config(run_dir)
    weights = checkpoint_path(run_dir, checkpoint)
    true_labels, corrupted_labels = load_labels(run_dir)
    train, test = load_dataset(config.dataset, root=config.data_root, progress=progress)
    train, test = run_inputs(config, train, test)
    if len(train) != len(true_labels) or not torch.equal(train.labels, true_labels):
        raise ValueError(
            f"run {run_dir}: the true labels in labels.npz do not match dataset "
            f"{config.dataset!r} as loaded now (was it trained on another copy?)"
        )
    model = build_model(
        config.model, input_shape=train.info.input_shape, num_classes=train.info.num_classes
    )
    load_model_weights(weights, model)
    model.to(resolve_device(device)).eval()
    return LoadedRun(config, model, train, test, true_labels, corrupted_labels)
