"""MASC relabels of a memorised run's training set (SPEC §6 items 1-4 and 8).

The retraining experiment (:mod:`masc_fast.pipeline.experiments.retrain`) replaces every training label of a
memorised model by MASC's prediction and fine-tunes on the new labels. This module makes those
labels:

1. split the *test* set 80/20 with ``train_test_split(np.arange(n_test), test_size=0.20,
   random_state=2345)`` (:func:`split_test`), the authors' seed;
2. fit the class subspaces of every paper layer (``model.masc_layers``) on the training set,
   once with the corrupted labels the model was trained on and once with the true labels, and
   score them on the 20 % part;
3. take the layer with the highest 20 % accuracy (first in layer order on ties,
   :func:`select_layer`), separately for each of the two subspace sets;
4. relabel every training point with that layer's MASC prediction on the point itself.

The protocol's rules on plain arrays (the split, the layer choice and
:func:`relabel_analysis`, which counts what the relabelling did to the wrong labels) live in
:mod:`masc_fast.pipeline.experiments.relabel_rules` and are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masc_fast._io import atomic_path
from masc_fast.pipeline.experiments.relabel_rules import (
    DEFAULT_SPLIT_SEED,
    SUBSPACE_SETS,
    check_split_seed,
    check_subspaces,
    relabel_analysis,
    select_layer,
    split_test,
)
from masc_fast.pipeline.runs.loading import checkpoint_path, load_run, resolve_device

__all__ = [
    "DEFAULT_SPLIT_SEED",
    "SUBSPACE_SETS",
    "Relabelling",
    "TrainedRun",
    "compute_relabels",
    "final_checkpoint",
    "load_trained_run",
    "relabel_analysis",
    "relabel_trained",
    "select_layer",
    "split_test",
    "subset_split",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Relabelling:
    """MASC relabels of a training set from one subspace set, and how the layer was chosen.

    Attributes
    ----------
    subspaces : {"corrupted", "true"}
        The training labels the class subspaces were fitted on.
    layer : str
        The chosen layer (highest MASC accuracy on the 20 % split).
    layer_accuracies : dict
        ``{layer: MASC accuracy on the 20 % split}`` for every candidate, in layer order.
    relabels : numpy.ndarray of int64, shape (n_train,)
        The new training labels, in dataset order.
    test80, test20 : numpy.ndarray of int64
        Indices of the two parts of the test set (:func:`split_test`).
    split_seed : int
    variance : float
        Explained-variance threshold of the subspaces.
    """

    subspaces: str
    layer: str
    layer_accuracies: dict = field(repr=False)
    relabels: np.ndarray = field(repr=False)
    test80: np.ndarray = field(repr=False)
    test20: np.ndarray = field(repr=False)
    split_seed: int
    variance: float

    @property
    def test20_accuracy(self) -> float:
        """MASC accuracy of the chosen layer on the 20 % split."""
        return float(self.layer_accuracies[self.layer])

    def save(self, path: str | os.PathLike) -> Path:
        """Write to an ``.npz`` file (no pickles), atomically."""
        with atomic_path(path) as tmp:
            np.savez(
                tmp,
                relabels=self.relabels,
                test80=self.test80,
                test20=self.test20,
                layers=np.array(list(self.layer_accuracies), dtype=str),
                layer_accuracies=np.array(list(self.layer_accuracies.values()), dtype=float),
                info=np.array(
                    json.dumps(
                        {
                            "subspaces": self.subspaces,
                            "layer": self.layer,
                            "split_seed": self.split_seed,
                            "variance": self.variance,
                        }
                    )
                ),
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Relabelling:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as stored:
            info = json.loads(str(stored["info"]))
            accuracies = dict(zip(stored["layers"].tolist(), stored["layer_accuracies"].tolist()))
            return cls(
                subspaces=info["subspaces"],
                layer=info["layer"],
                layer_accuracies=accuracies,
                relabels=stored["relabels"].astype(np.int64),
                test80=stored["test80"].astype(np.int64),
                test20=stored["test20"].astype(np.int64),
                split_seed=int(info["split_seed"]),
                variance=float(info["variance"]),
            )


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A finished training run loaded for relabelling and fine-tuning.

    Attributes
    ----------
    run_dir : pathlib.Path
    config : RunConfig
    model : torch.nn.Module
        Built with the run's architecture, holding ``checkpoints/final.safetensors`` (the
        memorised weights), on ``device``; :func:`load_trained_run` leaves it in ``eval()``
        mode (every pass that uses it sets the mode it needs).
    train, test : LabelledSplit
    true_labels, corrupted_labels : numpy.ndarray of int64, shape (n_train,)
        From the run's ``labels.npz``.
    device : torch.device
    """

    run_dir: Path
    config: object
    model: nn.Module = field(repr=False)
    train: object = field(repr=False)
    test: object = field(repr=False)
    true_labels: np.ndarray = field(repr=False)
    corrupted_labels: np.ndarray = field(repr=False)
    device: torch.device

    @property
    def weights(self) -> Path:
        """The memorised weights: the run's final checkpoint."""
        return final_checkpoint(self.run_dir)

    @property
    def loader_device(self) -> torch.device | None:
        """Where loaders put batches: the device on CUDA, else left on the CPU."""
        return self.device if self.device.type == "cuda" else None


def final_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``run_dir/checkpoints/final.safetensors``; FileNotFoundError if the run is unfinished."""
    return checkpoint_path(run_dir, "final")


def load_trained_run(
    run_dir: str | os.PathLike, *, device: torch.device | str | None = None, progress: bool = True
) -> TrainedRun:
    """Load a finished training run: config, memorised model, data and labels.

    The run's final checkpoint through :func:`masc_fast.pipeline.runs.loading.load_run`, with the labels
    as NumPy arrays and the device and run directory kept for fine-tuning.

    Parameters
    ----------
    run_dir : path
        Written by :func:`masc_fast.pipeline.runs.train.train_run`.
    device : torch.device or str, optional
        Default: CUDA if available, else the CPU.
    progress : bool, default True
        progress bars of slow dataset loading.

    Returns
    -------
    TrainedRun
        The model in ``eval()`` mode.

    Raises
    ------
    FileNotFoundError
        If the run has no ``config.json`` or no final checkpoint.
    ValueError
        If the run's true labels do not match the dataset as loaded now.

    Example
    -------
    >>> trained = load_trained_run("runs/mlp-digits-p0.4", device="cpu")  # doctest: +SKIP
    >>> trained.weights.name  # doctest: +SKIP
    'final.safetensors'
    """
    device = resolve_device(device)
    loaded = load_run(run_dir, "final", device, progress=progress)
    return TrainedRun(
        Path(run_dir),
        loaded.config,
        loaded.model,
        loaded.train,
        loaded.test,
        loaded.true_labels.numpy(),
        loaded.corrupted_labels.numpy(),
        device,
    )


def subset_split(test, indices: np.ndarray):
    """The test samples at ``indices`` (in that order) as a :class:`LabelledSplit`."""
    from masc_fast.data import LabelledSplit

    index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    return LabelledSplit(test.name, "test", test.data[index], test.labels[index], test.info)


def relabel_trained(
    trained: TrainedRun,
    *,
    subspaces: Sequence[str] = SUBSPACE_SETS,
    split_seed: int = DEFAULT_SPLIT_SEED,
    variance: float = 0.99,
    batch_size: int = 512,
    backend: str = "auto",
    memory_budget: int | str | None = None,
    progress: bool = True,
) -> dict[str, Relabelling]:
    """:func:`compute_relabels` on an already loaded run (one probe pass, one relabel pass)."""
    from masc_fast.activations import ActivationTap, resolve_layers
    from masc_fast.data import BatchLoader
    from masc_fast.pipeline.ranks import probe_distributed, shard
    from masc_fast.probe import probe

    subspaces = check_subspaces(subspaces)
    test80, test20 = split_test(len(trained.test), seed=split_seed)
    model, device = trained.model, trained.device
    num_classes = trained.train.info.num_classes
    part = shard()  # under torchrun the probe reads this rank's part of every batch
    train_loader = BatchLoader(
        trained.train,
        trained.corrupted_labels,
        true_labels=trained.true_labels,
        batch_size=batch_size,
        device=trained.loader_device,
        **part,
    )
    loader20 = BatchLoader(
        subset_split(trained.test, test20),
        batch_size=batch_size,
        device=trained.loader_device,
        **part,
    )
    result = probe(
        model,
        train_loader,
        {"test20": loader20},
        num_classes=num_classes,
        variance=variance,
        device=device,
        backend=backend,
        memory_budget=memory_budget,
        progress=progress,
        distributed=probe_distributed(),
    )
    chosen = {}
    for name in subspaces:
        accuracies = {
            layer: result.accuracy(layer, split="test20", subspaces=name, labels="true")
            for layer in result.layers
        }
        chosen[name] = (select_layer(accuracies), accuracies)
        logger.info("%s subspaces: best layer on the 20 %% split is %s", name, chosen[name][0])

    # One forward pass over the training set taps every chosen layer at once.
    modules = resolve_layers(model, None)
    tap = ActivationTap(model, {layer: modules[layer] for layer, _ in chosen.values()})
    predictions: dict[str, list[torch.Tensor]] = {name: [] for name in subspaces}
    was_training = model.training
    model.eval()
    try:
        with tap.attached():
            for x, *_ in BatchLoader(
                trained.train, batch_size=batch_size, device=trained.loader_device
            ):
                _, activations = tap.forward(x.to(device))
                for name, (layer, _) in chosen.items():
                    fitted = result.subspaces[(layer, name)]
                    predictions[name].append(
                        fitted.predict(activations[layer], backend=backend).cpu()
                    )
    finally:
        model.train(was_training)
    return {
        name: Relabelling(
            subspaces=name,
            layer=layer,
            layer_accuracies=accuracies,
            relabels=torch.cat(predictions[name]).numpy().astype(np.int64),
            test80=test80,
            test20=test20,
            split_seed=int(split_seed),
            variance=float(result.variance),
        )
        for name, (layer, accuracies) in chosen.items()
    }


def compute_relabels(
    run_dir: str | os.PathLike,
    *,
    subspaces: Sequence[str] = SUBSPACE_SETS,
    split_seed: int = DEFAULT_SPLIT_SEED,
    variance: float = 0.99,
    device: torch.device | str | None = None,
    batch_size: int = 512,
    backend: str = "auto",
    memory_budget: int | str | None = None,
    progress: bool = True,
) -> dict[str, Relabelling]:
    """MASC relabels of a memorised run's training set, from the best layer on 20 % of test.

    One :func:`masc_fast.probe` pass fits, at every layer of ``model.masc_layers``, the class
    subspaces of the training activations under the corrupted and the true labels and scores
    them on the 20 % part of the test set (:func:`split_test`). For each subspace set the best
    layer is the argmax of those accuracies (first on ties, :func:`select_layer`); a second
    forward pass over the training set predicts every training point with that layer's
    subspaces, which become its new label.

    Parameters
    ----------
    run_dir : path
        A finished training run (:func:`masc_fast.pipeline.runs.train.train_run`); its final checkpoint
        is the memorised model.
    subspaces : sequence of {"corrupted", "true"}, default both
    split_seed : int, default 2345
        ``random_state`` of the 80/20 test split.
    variance : float, default 0.99
        Explained-variance threshold t of the subspaces.
    device : torch.device or str, optional
        Default: CUDA if available, else the CPU.
    batch_size : int, default 512
        Rows per forward pass (does not change any result).
    backend, memory_budget
        Passed to :func:`masc_fast.probe` (the backend also scores the relabel pass).
    progress : bool, default True

    Returns
    -------
    dict
        ``{subspaces: Relabelling}``.

    Raises
    ------
    FileNotFoundError
        If the run or its final checkpoint is missing.
    ValueError
        On unknown subspace names or a bad ``split_seed``.

    Notes
    -----
    Cost: one probe (a fit pass over the training set and scoring passes over it and the
    20 % split) and one more forward pass over the training set.

    Examples
    --------
    >>> relabellings = compute_relabels("runs/mlp-digits-p0.4")  # doctest: +SKIP
    >>> relabellings["corrupted"].layer, relabellings["corrupted"].relabels[:5]  # doctest: +SKIP
    ('fc2', array([0, 1, 2, 3, 4]))
    """
    check_subspaces(subspaces)
    check_split_seed(split_seed)
    trained = load_trained_run(run_dir, device=device, progress=progress)
    return relabel_trained(
        trained,
        subspaces=subspaces,
        split_seed=split_seed,
        variance=variance,
        batch_size=batch_size,
        backend=backend,
        memory_budget=memory_budget,
        progress=progress,
    )
