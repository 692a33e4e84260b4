"""The workloads of ``bench_floor.py``: real pixels, a noisy MLP's activations, synthetic ranks.

Each workload is float32 training rows with the labels the subspaces are fitted on, and float32
test rows with their true labels, as NumPy arrays (what ``MASCClassifier`` takes):

* ``fashion-mnist-input``: the 60 000 + 10 000 Fashion-MNIST images flattened to 784 pixels,
  preprocessed as the authors did (``ToTensor`` then ``Normalize(0.5, 0.5)``, so [-1, 1];
  :meth:`masc_fast.data.LabelledSplit.inputs`), training labels corrupted at p = 0.4 by the
  paper's recipe (seed 42, SPEC §2.1);
* ``mlp-<dataset>-<layer>``: every probed layer of the paper's MLP (784 → 128 → 512 → 2048 →
  2048, post-ReLU) trained on those corrupted labels by the project's own pipeline
  (:func:`masc_fast.pipeline.runs.train.train_run`, the authors' MNIST MLP recipe: SGD lr 1e-3,
  momentum 0.9, batches of 32) for a few epochs only, so it runs on two cores in minutes; the
  activations of the final model (eval mode) are cached under ``bench/.cache/`` (or
  ``MASC_FAST_BENCH_CACHE``) and later runs read them. Without Fashion-MNIST the MLP is trained
  on scikit-learn's digits instead (1 347 + 450 rows, its own recipe);
* ``synthetic-d<d>-r<fraction>``: K = 10 classes whose Grams have an exact spectrum that keeps
  ``fraction · d`` components at t = 0.99
  (:func:`masc_fast.testing.synthetic.classes_with_components`).

``MASC_FAST_BENCH_QUICK=1`` shrinks every workload to a seconds-long smoke run of the same code:
the first 1 000 + 200 Fashion-MNIST rows, the digits MLP (3 epochs, layers up to 128 wide),
synthetic d = 64 with 128 rows per class and 300 test rows.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from masc_fast.data import load_dataset
from masc_fast.data.corruption import noisy_labels
from masc_fast.data.idx_folder import idx_folder
from masc_fast.data.sources import DEFAULT_DATA_ROOTS
from masc_fast.models import MLP
from masc_fast.testing.synthetic import classes_with_components

__all__ = [
    "CACHE",
    "NUM_CLASSES",
    "P",
    "QUICK",
    "WORKLOADS",
    "Workload",
    "fashion_root",
    "load_workload",
    "mlp_activations",
]

QUICK = os.environ.get("MASC_FAST_BENCH_QUICK") == "1"
P = 0.4  # label corruption of the training rows (SPEC §2.1, the paper's recipe)
NUM_CLASSES = 10
CACHE = Path(os.environ.get("MASC_FAST_BENCH_CACHE", Path(__file__).parent / ".cache"))
_FASHION_ROWS = (1000, 200) if QUICK else (None, None)  # (train, test) rows; None: all
_MLP_EPOCHS = {"fashion-mnist": 3, "digits": 3 if QUICK else 30}
_MLP_LAYERS = ("input",) + tuple(
    f"fc{index}" for index in range(1, len(inspect.signature(MLP).parameters["hidden"].default) + 1)
)
_QUICK_MAX_WIDTH = 128
# (d, rows per class, test rows); fractions of d kept at t = 0.99
_SYNTHETIC = (64, 128, 300) if QUICK else (1024, 3000, 10000)
_FRACTIONS = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class Workload:
    """Training rows (n, d) float32 with their fit labels, test rows with true labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def shape(self) -> str:
        return f"{self.x_train.shape[0]}×{self.x_train.shape[1]}, K={NUM_CLASSES}"


def fashion_root() -> Path | None:
    """The data root holding Fashion-MNIST (Debian's idx files or torchvision's), or None."""
    env = os.environ.get("MASC_FAST_DATA_ROOT")
    for root in [*([Path(env)] if env else []), *DEFAULT_DATA_ROOTS]:
        if idx_folder("fashion-mnist", root) or (root / "FashionMNIST" / "raw").is_dir():
            return root
    return None


def _skip_without_fashion() -> Path:
    root = fashion_root()
    if root is None:
        pytest.skip(
            "Fashion-MNIST is not here: apt-get install dataset-fashion-mnist (files in "
            "/usr/share/datasets/fashion-mnist/) or set MASC_FAST_DATA_ROOT"
        )
    return root


def _rows(split, limit: int | None) -> np.ndarray:
    return split.inputs(slice(0, limit)).flatten(1).numpy()


def _fashion_input() -> Workload:
    train, test = load_dataset("fashion-mnist", root=_skip_without_fashion(), progress=False)
    n_train, n_test = _FASHION_ROWS
    corrupted = noisy_labels(train.labels.numpy(), P, NUM_CLASSES, recipe="paper")
    return Workload(
        _rows(train, n_train),
        corrupted[:n_train],
        _rows(test, n_test),
        test.labels.numpy()[:n_test],
        f"Fashion-MNIST pixels, labels corrupted at p = {P}",
    )


def _train_mlp(dataset: str, root: Path | None, run_dir: Path) -> None:
    from masc_fast.pipeline.runs.config import RunConfig
    from masc_fast.pipeline.runs.recipes import RECIPES
    from masc_fast.pipeline.runs.train import train_run

    # The paper's MLP has no Fashion-MNIST recipe; its MNIST one is the nearest (SPEC §4).
    recipe = RECIPES.get(("mlp", dataset), RECIPES[("mlp", "mnist")])
    config = RunConfig(
        "mlp",
        dataset,
        p=P,
        noise_recipe="paper",
        optimizer=recipe.optimizer,
        lr=recipe.lr,
        momentum=recipe.momentum,
        batch_size=recipe.batch_size,
        target_accuracy=recipe.target_accuracy,
        max_epochs=_MLP_EPOCHS[dataset],
        data_root=None if root is None else str(root),
        device="cpu",
    )
    train_run(config, run_dir, resume=True, progress=False)


def mlp_activations(dataset: str) -> Path:
    """Folder of ``<layer>-{train,test}.npy`` and labels of the MLP trained on ``dataset``;
    trains and extracts once, then reads the cache."""
    from masc_fast.activations import ActivationTap, resolve_layers
    from masc_fast.pipeline.runs.loading import load_run

    root = _skip_without_fashion() if dataset == "fashion-mnist" else None
    folder = CACHE / f"floor-mlp-{dataset}-p{P}-e{_MLP_EPOCHS[dataset]}"
    out = folder / "activations"
    if (out / "done.json").is_file():
        return out
    _train_mlp(dataset, root, folder / "run")
    _, model, train, test, _, corrupted = load_run(
        folder / "run", "final", device="cpu", progress=False
    )
    out.mkdir(parents=True, exist_ok=True)
    tap = ActivationTap(model, resolve_layers(model, None))
    with tap.attached():
        for name, split in (("train", train), ("test", test)):
            blocks: dict[str, list[np.ndarray]] = {}
            for start in range(0, len(split), 2000):
                _, captured = tap.forward(split.inputs(slice(start, start + 2000)))
                for layer, rows in captured.items():
                    blocks.setdefault(layer, []).append(rows.numpy())
            for layer, parts in blocks.items():
                np.save(out / f"{layer}-{name}.npy", np.concatenate(parts))
    np.save(out / "y-train.npy", corrupted.numpy())
    np.save(out / "y-test.npy", test.labels.numpy())
    summary = json.loads((folder / "run" / "summary.json").read_text())
    (out / "done.json").write_text(json.dumps(summary, indent=1))
    return out


def _mlp_layer(dataset: str, layer: str) -> Workload:
    folder = mlp_activations(dataset)
    run = json.loads((folder / "done.json").read_text())
    return Workload(
        np.load(folder / f"{layer}-train.npy"),
        np.load(folder / "y-train.npy"),
        np.load(folder / f"{layer}-test.npy"),
        np.load(folder / "y-test.npy"),
        f"MLP on {dataset}, p = {P}, {run['epochs']} epochs ({run['seconds']:.0f} s; train "
        f"accuracy {run['final_train_accuracy']:.3f} on the corrupted labels, test "
        f"{run['final_test_accuracy']:.3f}), layer {layer}",
    )


def _synthetic(fraction: float) -> Workload:
    dim, rows, n_test = _SYNTHETIC
    components = round(fraction * dim)
    x, y, x_test, y_test = classes_with_components(
        rows, dim, NUM_CLASSES, components, n_test=n_test, seed=16
    )
    return Workload(
        x.numpy(),
        y.numpy(),
        x_test.numpy(),
        y_test.numpy(),
        f"synthetic: {components} of {dim} components per class at t = 0.99",
    )


def _workloads() -> dict:
    mlp_dataset = "fashion-mnist" if fashion_root() is not None and not QUICK else "digits"
    layers = _MLP_LAYERS
    if mlp_dataset == "fashion-mnist":
        layers = layers[1:]  # its input layer is the workload fashion-mnist-input
    if QUICK:
        widths = dict(zip(_MLP_LAYERS[1:], inspect.signature(MLP).parameters["hidden"].default))
        layers = tuple(layer for layer in layers if widths.get(layer, 0) <= _QUICK_MAX_WIDTH)
    n_train = _FASHION_ROWS[0]
    workloads = {f"fashion-mnist-input{f'-n{n_train}' if n_train else ''}": (_fashion_input,)}
    for layer in layers:
        workloads[f"mlp-{mlp_dataset}-{layer}"] = (_mlp_layer, mlp_dataset, layer)
    for fraction in _FRACTIONS:
        workloads[f"synthetic-d{_SYNTHETIC[0]}-r{fraction}"] = (_synthetic, fraction)
    return workloads


#: name -> (loader, *arguments); names are fixed at import, the data is read on first use.
WORKLOADS = _workloads()
_LOADED: dict[str, Workload] = {}


def load_workload(name: str) -> Workload:
    """The workload's arrays (one workload in memory at a time); skips when its data is absent."""
    if name not in _LOADED:
        _LOADED.clear()
        loader, *arguments = WORKLOADS[name]
        _LOADED[name] = loader(*arguments)
    return _LOADED[name]
