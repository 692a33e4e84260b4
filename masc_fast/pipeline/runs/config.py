"""What a training run is (:class:`RunConfig`) and what it did (:class:`RunSummary`), as JSON."""

from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, fields

from masc_fast.pipeline.runs.recipes import RECIPES, TrainingRecipe, training_recipe

__all__ = ["NOISE_RECIPES", "REGULARIZERS", "RunConfig", "RunSummary", "parse_regularization"]

#: Label-noise recipes of :func:`masc_fast.data.corruption.noisy_labels`.
NOISE_RECIPES = ("seeded", "paper")
_RECIPE_FIELDS = (
    "optimizer",
    "lr",
    "momentum",
    "batch_size",
    "target_accuracy",
    "max_epochs",
    "lr_decay",
)
#: Regularisers a run may add (Arpit et al.'s), with the range of their strength.
REGULARIZERS = {
    "dropout": "in (0, 1)",
    "input_noise": "> 0 (standard deviation, input units)",
    "weight_decay": "> 0",
}
_MLPS = ("mlp", "mlp-small", "mlp-1x512", "mlp-3x512")


def parse_regularization(text: str) -> dict[str, float]:
    """``"none"`` -> ``{}``; ``"dropout=0.5+weight_decay=5e-4"`` -> ``{"dropout": 0.5, ...}``.

    Raises
    ------
    ValueError
        An unknown regulariser, a repeated one, or a strength out of its range (named).
    """
    if not isinstance(text, str):
        raise TypeError(f"regularization must be a string, got {text!r}")
    if text == "none":
        return {}
    found: dict[str, float] = {}
    for part in text.split("+"):
        name, _, value = part.partition("=")
        if name not in REGULARIZERS or name in found:
            raise ValueError(
                f"regularization {text!r}: {part!r} is not one of "
                f"{', '.join(f'{key}=X' for key in REGULARIZERS)} (joined by '+', each once)"
            )
        try:
            strength = float(value)
        except ValueError:
            strength = float("nan")
        if not (strength > 0 and (name != "dropout" or strength < 1)):
            raise ValueError(f"regularization {text!r}: {name} must be {REGULARIZERS[name]}")
        found[name] = strength
    return found


# Fields added after runs existed -> their defaults, left out of to_dict() when default.
_RECENT_DEFAULTS = {
    "randomize": "none",
    "regularization": "none",
    "memorization": False,
    "memorization_examples": 1000,
    "csr_radius": 0.1,
    "train_examples": None,
    "lr_decay": None,
}
# Enough to train a combination without a row in RECIPES (momentum defaults to 0.9 for SGD).
_REQUIRED_WITHOUT_RECIPE = ("optimizer", "lr", "batch_size", "target_accuracy", "max_epochs")


def _from_dict(cls, values: dict):
    if not isinstance(values, dict):
        raise TypeError(f"{cls.__name__}.from_dict needs a dict, got {type(values).__name__}")
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected {sorted(known)}")
    return cls(**values)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run.

    Attributes
    ----------
    model : str
        ``"mlp"``, ``"cnn"``, ``"alexnet"`` or ``"resnet18"``.
    dataset : str
        A name from :data:`masc_fast.data.DATASET_NAMES`.
    p : float, default 0.0
        Label-corruption degree in [0, 1] (SPEC §2.1).
    seed : int, default 0
        Non-negative run seed: torch is seeded with it right before the model is built, it
        seeds the per-epoch shuffle and (for ``noise_recipe="seeded"``) the label noise.
    noise_recipe : {"seeded", "paper"}, default "seeded"
        ``"seeded"``: noise drawn from ``seed``, so runs are independent; ``"paper"``: the
        authors' fixed ``np.random.seed(42)`` labels, identical in every run.
    shuffle : bool, default True
        Shuffle the training set each epoch; ``False`` reproduces the authors' fixed order.
    randomize : str, default "none"
        ``"none"``: the inputs as they are, the labels corrupted at ``p`` by ``noise_recipe``
        (the paper's runs). Else one of Zhang et al.'s randomization tests
        (:mod:`masc_fast.data.randomization`), which fixes ``p``: ``"true"`` (p = 0),
        ``"partial"`` (0 < p <= 1, the ``"seeded"`` noise: Zhang's rule), ``"random-labels"``
        (p = 1, seeded), and the input modes ``"shuffled-pixels"``, ``"random-pixels"``,
        ``"gaussian"`` (p = 0; the inputs are randomized from ``seed``, the same way whenever
        the run is trained, resumed or probed).
    optimizer, lr, momentum, batch_size, target_accuracy, max_epochs, lr_decay : optional
        Overrides of :func:`masc_fast.pipeline.runs.recipes.training_recipe`'s values; ``None`` keeps the
        recipe's. ``target_accuracy`` is a fraction (0.999, not 99.9).
    checkpoint_every : int, default 10
        Keep ``checkpoints/epoch_{e:04d}.safetensors`` every this many epochs.
    data_root : str, optional
        Folder holding the torchvision / Tiny ImageNet files (not needed for digits, mnist1d).
    download : bool, default False
        Download missing datasets into ``data_root``.
    device : str, optional
        ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; ``None``: CUDA if available, else CPU.
    regularization : str, default "none"
        Arpit et al.'s regularisers, ``"+"``-joined: ``dropout=P`` (after each hidden ReLU;
        the MLPs only), ``input_noise=S`` (Gaussian noise of standard deviation S added to
        every training batch's inputs), ``weight_decay=W`` (the optimiser's L2 penalty); e.g.
        ``"dropout=0.5+weight_decay=0.0005"`` (:func:`parse_regularization`).
    memorization : bool, default False
        Record Arpit et al.'s per-epoch measures (:mod:`masc_fast.pipeline.runs.memorization`)
        on the first ``memorization_examples`` training samples, the critical samples within
        ℓ∞ radius ``csr_radius`` (in the model's input units).
    memorization_examples : int, default 1000
    csr_radius : float, default 0.1
    train_examples : int, optional
        Train on the first this many training examples only (dataset order, so the same
        examples for every seed and randomization: Arpit's per-example learnability compares
        runs example by example); the test split stays whole. A CPU-sized version of a large
        dataset. ``None``: all of them.
    compile : bool, default False
        Train through ``torch.compile``.
    amp : bool, default False
        bf16 autocast for forward passes (CUDA only).

    Raises
    ------
    ValueError, TypeError
        If a field has an impossible value or type; the message names the field.

    Examples
    --------
    >>> config = RunConfig("cnn", "mnist", p=0.4, seed=3)
    >>> config.recipe().optimizer, config.recipe().batch_size
    ('adam', 128)
    >>> RunConfig.from_dict(config.to_dict()) == config
    True
    """

    model: str
    dataset: str
    p: float = 0.0
    seed: int = 0
    noise_recipe: str = "seeded"
    shuffle: bool = True
    randomize: str = "none"
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    batch_size: int | None = None
    target_accuracy: float | None = None
    max_epochs: int | None = None
    checkpoint_every: int = 10
    data_root: str | None = None
    download: bool = False
    device: str | None = None
    compile: bool = False
    amp: bool = False
    regularization: str = "none"
    memorization: bool = False
    memorization_examples: int = 1000
    csr_radius: float = 0.1
    train_examples: int | None = None
    lr_decay: float | None = None

    def __post_init__(self) -> None:
        for name in ("model", "dataset"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        p = self.p
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"p must be a number in [0, 1], got {p!r}")
        object.__setattr__(self, "p", float(p))
        for name, low in (("seed", 0), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        self._check_randomize()
        if "dropout" in parse_regularization(self.regularization) and self.model not in _MLPS:
            raise ValueError(
                f"regularization {self.regularization!r}: dropout is built into the MLPs "
                f"({', '.join(_MLPS)}), not {self.model!r}"
            )
        if self.noise_recipe not in NOISE_RECIPES:
            raise ValueError(
                f"noise_recipe must be one of {NOISE_RECIPES}, got {self.noise_recipe!r}"
            )
        if (
            isinstance(self.memorization_examples, bool)
            or not isinstance(self.memorization_examples, numbers.Integral)
            or self.memorization_examples < 1
        ):
            raise ValueError(
                f"memorization_examples must be a whole number >= 1, got "
                f"{self.memorization_examples!r}"
            )
        examples = self.train_examples
        if examples is not None and (
            isinstance(examples, bool) or not isinstance(examples, numbers.Integral) or examples < 1
        ):
            raise ValueError(
                f"train_examples must be a whole number >= 1 or None, got {examples!r}"
            )
        radius = self.csr_radius
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not radius > 0:
            raise ValueError(f"csr_radius must be a positive number, got {radius!r}")
        for name in ("shuffle", "download", "compile", "amp", "memorization"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.data_root, os.PathLike):
            object.__setattr__(self, "data_root", os.fspath(self.data_root))
        for name in ("data_root", "device"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string or None, got {value!r}")

    def _check_randomize(self) -> None:
        """The corruption degree each randomization test fixes (see ``randomize``)."""
        from masc_fast.data.randomization import INPUT_MODES, check_mode

        if self.randomize == "none":
            return
        check_mode(self.randomize)
        if self.randomize in ("partial", "random-labels") and self.noise_recipe != "seeded":
            raise ValueError(
                f"randomize={self.randomize!r} draws Zhang's seeded label noise; "
                f"noise_recipe={self.noise_recipe!r} is the paper's (use randomize='none')"
            )
        wanted = {"true": "p = 0", "random-labels": "p = 1", "partial": "0 < p <= 1"}
        wanted |= dict.fromkeys(INPUT_MODES, "p = 0")
        allowed = {
            "p = 0": self.p == 0,
            "p = 1": self.p == 1,
            "0 < p <= 1": 0 < self.p <= 1,
        }[wanted[self.randomize]]
        if not allowed:
            raise ValueError(
                f"randomize={self.randomize!r} needs {wanted[self.randomize]}, got p={self.p:g}"
            )

    def recipe(self) -> TrainingRecipe:
        """The training recipe with this config's overrides applied.

        Overriding ``optimizer`` to ``"adam"`` or ``"adam-fused"`` drops the momentum; to ``"sgd"`` without a
        ``momentum`` gives 0.9. A model/dataset pair without a row in
        :data:`masc_fast.pipeline.runs.recipes.RECIPES` needs ``optimizer``, ``lr``, ``batch_size``,
        ``target_accuracy`` and ``max_epochs``.

        Raises
        ------
        ValueError
            On an unknown combination without those overrides, or an invalid override
            (e.g. ``momentum`` with Adam).
        """
        overrides = {name: getattr(self, name) for name in _RECIPE_FIELDS}
        overrides = {name: value for name, value in overrides.items() if value is not None}
        if (self.model, self.dataset) in RECIPES or not all(
            name in overrides for name in _REQUIRED_WITHOUT_RECIPE
        ):
            values = training_recipe(self.model, self.dataset).to_dict()
        else:
            values = {"momentum": None}
        values.update(overrides)
        if "momentum" not in overrides:
            values["momentum"] = None if values["optimizer"] != "sgd" else values["momentum"]
            if values["optimizer"] == "sgd" and values["momentum"] is None:
                values["momentum"] = 0.9
        return TrainingRecipe(**values)

    def run_columns(self) -> dict:
        """The result-table columns that name this run: model, dataset, p, seed, and
        ``randomize`` and ``regularization`` where they are used (absent for the paper's
        runs)."""
        columns = {"model": self.model, "dataset": self.dataset, "p": self.p, "seed": self.seed}
        for name in ("randomize", "regularization"):
            if getattr(self, name) != "none":
                columns[name] = getattr(self, name)
        return columns

    def to_dict(self) -> dict:
        """JSON-ready dict of every field (the inverse of :meth:`from_dict`); the fields added
        after the first runs (``randomize``, the memorisation measures) only when they are
        not their defaults, so runs made before them still resume."""
        values = asdict(self)
        for name, default in _RECENT_DEFAULTS.items():  # absent from older config.json files
            if values[name] == default:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """A config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        return _from_dict(cls, values)


@dataclass(frozen=True)
class RunSummary:
    """How a finished training run ended (``summary.json``).

    Attributes
    ----------
    epochs : int
        Epochs trained.
    reached_target : bool
        Whether the last epoch's running train accuracy reached the recipe's target (else the
        run stopped at the cap).
    final_train_accuracy, final_train_accuracy_true : float
        Running train accuracy of the last epoch against the corrupted and the true labels.
    final_test_accuracy : float
        Eval-mode test accuracy after the last epoch.
    best_epoch : int
        Epoch (>= 1) with the highest test accuracy, the first on ties
        (``checkpoints/best.safetensors``).
    best_test_accuracy : float
    seconds : float
        Time spent training and evaluating, summed over all sessions of a resumed run
        (checkpoint writing excluded).
    device : str
        Device of the last session.
    torch_version : str
    """

    epochs: int
    reached_target: bool
    final_train_accuracy: float
    final_train_accuracy_true: float | None
    final_test_accuracy: float
    best_epoch: int
    best_test_accuracy: float
    seconds: float
    device: str
    torch_version: str

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RunSummary:
        """A summary from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        return _from_dict(cls, values)
