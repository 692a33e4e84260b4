"""The authors' training recipes by (model, dataset), plus CPU-sized ones for the offline sets.

SPEC §4: cross-entropy, no weight decay, no schedule, no augmentation; stop at the end of the
first epoch whose running train accuracy on the (corrupted) training labels reaches the target,
or after the cap. Zhang et al.'s networks add their per-epoch learning-rate decay. :func:`training_recipe` returns the table's row as a :class:`TrainingRecipe`.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

__all__ = ["OPTIMIZERS", "RECIPES", "TrainingRecipe", "training_recipe"]

#: Optimisers a recipe may name (see :func:`masc_fast.pipeline.runs.training.make_optimizer`).
OPTIMIZERS = ("sgd", "adam", "adam-fused")


@dataclass(frozen=True)
class TrainingRecipe:
    """How one model is trained on one dataset.

    Attributes
    ----------
    optimizer : {"sgd", "adam", "adam-fused"}
        ``"sgd"`` is SGD with ``momentum``; ``"adam"`` is Adam with torch's default betas
        (0.9, 0.999); ``"adam-fused"`` is that Adam through torch's fused kernel (rounding-level
        differences, a third less time per epoch on small CPU models). None uses weight decay.
    lr : float
        Learning rate, > 0.
    momentum : float or None
        SGD momentum in [0, 1); ``None`` for Adam (it has betas, not momentum).
    batch_size : int
        Training batch size, >= 1.
    target_accuracy : float
        Stop rule, a fraction in (0, 1]: training stops at the end of the first epoch whose
        running train accuracy on the (corrupted) training labels is ``>= target_accuracy``.
    max_epochs : int
        Epoch cap, >= 1.
    lr_decay : float, default 1.0
        Per-epoch factor of the learning rate: epoch e (1-based) runs at
        ``lr · lr_decay ** (e − 1)`` (Zhang et al.: 0.95); 1.0 is the paper's constant rate.

    Raises
    ------
    ValueError
        If a field is out of range, or ``momentum`` is given for Adam / missing for SGD.
    TypeError
        If ``batch_size`` or ``max_epochs`` is not an integer.

    Examples
    --------
    >>> TrainingRecipe("adam", 2e-4, None, 128, 0.999, 500).batch_size
    128
    """

    optimizer: str
    lr: float
    momentum: float | None
    batch_size: int
    target_accuracy: float
    max_epochs: int
    lr_decay: float = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer != "sgd" and self.momentum is not None:
            raise ValueError(
                f"momentum applies to SGD only; Adam uses its default betas, got "
                f"momentum={self.momentum!r}"
            )
        if self.optimizer == "sgd" and (
            isinstance(self.momentum, bool)
            or not isinstance(self.momentum, numbers.Real)
            or not 0 <= self.momentum < 1
        ):
            raise ValueError(f"SGD momentum must be in [0, 1), got {self.momentum!r}")
        for name in ("batch_size", "max_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        decay = self.lr_decay
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 < decay <= 1:
            raise ValueError(f"lr_decay must be a factor in (0, 1], got {decay!r}")
        target = self.target_accuracy
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0 < target <= 1:
            raise ValueError(
                f"target_accuracy must be a fraction in (0, 1], got {target!r} (99.9 % is 0.999)"
            )

    def to_dict(self) -> dict:
        """The recipe as a JSON-ready dict (the inverse of :meth:`from_dict`); ``lr_decay``
        only when it is not 1, so runs made before it existed still resume."""
        values = asdict(self)
        if values["lr_decay"] == 1.0:
            del values["lr_decay"]
        return values

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based)."""
        return self.lr * self.lr_decay ** (epoch - 1)

    @classmethod
    def from_dict(cls, values: dict) -> TrainingRecipe:
        """A recipe from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainingRecipe field(s) {unknown}; expected {sorted(known)}")
        return cls(**values)


def _sgd(lr, batch_size, target, cap=500):
    return TrainingRecipe("sgd", lr, 0.9, batch_size, target, cap)


def _adam(lr, batch_size, target, cap=500):
    return TrainingRecipe("adam", lr, None, batch_size, target, cap)


def _zhang(lr):
    """Zhang et al.'s randomization-test schedule: SGD momentum 0.9, batch 128, ×0.95 per
    epoch, until every training label is fitted (cap 200 epochs)."""
    return TrainingRecipe("sgd", lr, 0.9, 128, 1.0, 200, lr_decay=0.95)


# Zhang et al.'s networks on 28×28 grey and 32×32 colour images: lr 0.1 for the Inception,
# 0.01 for the others.
_ZHANG_RECIPES = {
    (model, dataset): _zhang(0.1 if model == "inception-small" else 0.01)
    for model in ("mlp-1x512", "mlp-3x512", "alexnet-small", "inception-small")
    for dataset in ("mnist", "fashion-mnist", "cifar10")
}
# Zhang's MLPs on the offline sets, CPU-sized like mlp-small's row (fused Adam, lr 2e-3, batch
# 32) with a 200-epoch cap: measured on two CPU cores, seed 0, mlp-1x512 on digits fitted true
# labels in 13 epochs (2.7 s), Gaussian inputs in 16 (2.2 s) and random labels in 98 (12 s).
_ZHANG_RECIPES |= {
    (model, dataset): TrainingRecipe("adam-fused", 2e-3, None, 32, 1.0, 200)
    for model in ("mlp-1x512", "mlp-3x512")
    for dataset in ("digits", "mnist1d")
}


#: (model, dataset) -> recipe. The first eight rows are SPEC §4's table; the MLP training
#: script is not in the authors' repository, so its stop target is 1.0 (their MLP CSVs end at
#: about 100 %) with the same 500-epoch cap as every other script.
#:
#: The offline rows (digits, MNIST-1D; MLP only, since the CNN, AlexNet and ResNet18 need
#: 28/32/64-pixel images) are CPU-sized, not the authors': Adam, lr 1e-3, batch 32, because the
#: paper's premise is a model that memorises its corrupted labels, and on these small sets the
#: authors' MLP schedule (SGD lr 1e-3) needs hundreds of epochs to do so while Adam needs about
#: thirty. Measured on two CPU cores with the full MLP, seed 0, 30 epochs: digits at p = 0.4
#: and 0.8 reached 97.3 % and 96.7 % running train accuracy on the corrupted labels, MNIST-1D
#: at p = 0.4 98.1 %. The cap is 100 epochs.
#:
#: ``mlp-small`` on digits (the one-minute demo's model, two hidden layers of 512) needs twice
#: the learning rate to memorise as fast: after 30 epochs (seed 0) it fitted 96.5-98.2 % of the
#: corrupted labels at every p from 0.2 to 1.0 with lr 2e-3, 89.5-96.1 % with lr 1e-3. It uses
#: Adam's fused kernel, which took a third off its epochs on one CPU thread (8.4 s instead of
#: 11.5 s for 30 epochs at p = 0.6, the 2-core machine shared with another job).
RECIPES: dict[tuple[str, str], TrainingRecipe] = {
    ("mlp", "mnist"): _sgd(1e-3, 32, 1.0),
    ("mlp", "cifar10"): _sgd(1e-3, 32, 1.0),
    ("cnn", "mnist"): _adam(2e-4, 128, 0.999),
    ("cnn", "fashion-mnist"): _adam(2e-4, 128, 0.991),
    ("cnn", "cifar10"): _adam(2e-4, 32, 1.0),
    ("alexnet", "cifar100"): _adam(1e-4, 128, 0.991),
    ("alexnet", "tiny-imagenet"): _adam(1e-4, 500, 0.999),
    ("resnet18", "cifar10"): _sgd(1e-3, 32, 1.0),
    ("mlp", "digits"): _adam(1e-3, 32, 1.0, cap=100),
    ("mlp", "mnist1d"): _adam(1e-3, 32, 1.0, cap=100),
    ("mlp-small", "digits"): TrainingRecipe("adam-fused", 2e-3, None, 32, 1.0, 100),
    **_ZHANG_RECIPES,
}


def training_recipe(model: str, dataset: str) -> TrainingRecipe:
    """The training recipe of ``model`` on ``dataset`` (SPEC §4; CPU-sized for offline sets).

    ============================  =====  ======  ========  =====  ======  ===
    model / dataset               opt.   lr      momentum  batch  target  cap
    ============================  =====  ======  ========  =====  ======  ===
    mlp / mnist, cifar10          SGD    1e-3    0.9       32     1.0     500
    cnn / mnist                   Adam   2e-4    --        128    0.999   500
    cnn / fashion-mnist           Adam   2e-4    --        128    0.991   500
    cnn / cifar10                 Adam   2e-4    --        32     1.0     500
    alexnet / cifar100            Adam   1e-4    --        128    0.991   500
    alexnet / tiny-imagenet       Adam   1e-4    --        500    0.999   500
    resnet18 / cifar10            SGD    1e-3    0.9       32     1.0     500
    mlp / digits, mnist1d         Adam   1e-3    --        32     1.0     100
    mlp-small / digits            Adam*  2e-3    --        32     1.0     100
    Zhang's nets** / mnist,       SGD    1e-2    0.9       128    1.0     200
    fashion-mnist, cifar10
    mlp-1x512, mlp-3x512 /        Adam*  2e-3    --        32     1.0     200
    digits, mnist1d
    ============================  =====  ======  ========  =====  ======  ===

    ``*`` ``"adam-fused"``: Adam through torch's fused kernel. ``**`` ``mlp-1x512``,
    ``mlp-3x512``, ``alexnet-small``, ``inception-small`` (lr 0.1), with ``lr_decay`` 0.95
    (Zhang et al., ``RANDOMIZATION.md``).

    Parameters
    ----------
    model : str
        A name from :data:`masc_fast.models.MODEL_NAMES`.
    dataset : str
        A name from :data:`masc_fast.data.DATASET_NAMES`.

    Returns
    -------
    TrainingRecipe
        Frozen; change a field with :func:`dataclasses.replace`.

    Raises
    ------
    ValueError
        If the combination has no recipe; the message lists the known combinations.

    Examples
    --------
    >>> training_recipe("cnn", "fashion-mnist").target_accuracy
    0.991
    """
    try:
        return RECIPES[(model, dataset)]
    except (KeyError, TypeError):
        known = ", ".join(f"{m}/{d}" for m, d in RECIPES)
        raise ValueError(
            f"no training recipe for model {model!r} on dataset {dataset!r}; known "
            f"combinations: {known} (or give every override: optimizer, lr, batch_size, "
            "target_accuracy, max_epochs)"
        ) from None
