"""Build the paper's models by name for a dataset's per-sample input shape."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

from torch import nn

from masc_fast.models.alexnet import ALEXNET_INPUT_SIZE, AlexNet
from masc_fast.models.cnn import CNN, FLATTEN_WIDTH
from masc_fast.models.mlp import MLP, PAPER_HIDDEN, SMALL_HIDDEN, check_width
from masc_fast.models.resnet import ResNet18
from masc_fast.models.zhang import SmallAlexNet, SmallInception

__all__ = ["MODEL_NAMES", "build_model"]

#: Names :func:`build_model` accepts: the paper's models in the order it introduces them, then
#: ``"mlp-small"`` (the MLP with two hidden layers of 512, the one-minute demo's model), then
#: Zhang et al.'s randomization-test networks (:mod:`masc_fast.models.zhang`).
MODEL_NAMES = (
    "mlp",
    "cnn",
    "alexnet",
    "resnet18",
    "mlp-small",
    "mlp-1x512",
    "mlp-3x512",
    "alexnet-small",
    "inception-small",
)
_ZHANG_MLP = {"mlp-1x512": (512,), "mlp-3x512": (512, 512, 512)}

_RESNET_INPUT = (3, 32, 32)


def _check_shape(input_shape) -> tuple[int, ...]:
    # Any iterable of integers (tuple, list, torch.Size, a NumPy array) names a shape.
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Iterable):
        raise TypeError(
            f"input_shape must be a sequence of integers such as (1, 28, 28), got {input_shape!r}"
        )
    shape = tuple(input_shape)
    if not shape or any(
        isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1
        for size in shape
    ):
        raise ValueError(
            f"input_shape must be a non-empty sequence of positive integers (the per-sample "
            f"shape, without the batch axis), got {input_shape!r}"
        )
    return tuple(int(size) for size in shape)


def _square_image(name: str, shape: tuple[int, ...], sizes) -> tuple[int, int]:
    """``(channels, side)`` of a ``(C, H, W)`` shape with ``H == W`` in ``sizes``."""
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in sizes:
        expected = " or ".join(f"(C, {s}, {s})" for s in sorted(sizes))
        raise ValueError(f"{name} needs input_shape {expected}, got {shape}")
    return shape[0], shape[1]


def build_model(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    variant: str | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """A freshly initialised paper model for inputs of one per-sample shape.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`: the paper's models (SPEC §3.1-3.4); ``"mlp-small"``,
        :class:`~masc_fast.models.mlp.MLP` with hidden widths
        :data:`~masc_fast.models.mlp.SMALL_HIDDEN`; Zhang et al.'s ``"mlp-1x512"``,
        ``"mlp-3x512"``, ``"alexnet-small"`` and ``"inception-small"`` (square images of
        15 px or more for the last two).
    input_shape : sequence of int
        Shape of one sample without the batch axis: ``(1, 28, 28)`` for MNIST,
        ``(3, 32, 32)`` for CIFAR, ``(3, 64, 64)`` for Tiny ImageNet, ``(64,)`` for
        scikit-learn digits, ``(40,)`` for MNIST-1D.
    num_classes : int
        Number of output logits.
    variant : {"cifar100", "tiny"}, optional
        AlexNet only. By default taken from the side length (32 -> ``"cifar100"``,
        64 -> ``"tiny"``); if given, it must fit ``input_shape``.
    dropout : float, default 0
        The MLPs only: dropout after each hidden ReLU (:class:`~masc_fast.models.mlp.MLP`).

    Returns
    -------
    torch.nn.Module
        The model, on the CPU, in training mode, initialised from torch's global generator
        (seed it first for reproducible weights). Its ``masc_layers`` names the probed layers.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`MODEL_NAMES` (the message lists them); if
        ``input_shape`` does not fit the model: ``cnn`` needs ``(C, 28, 28)`` or
        ``(C, 32, 32)``, ``alexnet`` ``(3, 32, 32)`` or ``(3, 64, 64)``, ``resnet18``
        ``(3, 32, 32)``; if ``variant`` is unknown, disagrees with the shape, or is given
        for a model other than ``alexnet``; or if ``num_classes`` is below 1.
    TypeError
        If ``input_shape`` is not a sequence or ``num_classes`` not an integer.

    Examples
    --------
    >>> model = build_model("cnn", input_shape=(3, 32, 32), num_classes=10)
    >>> model.fc1.in_features
    1024
    >>> build_model("alexnet", input_shape=(3, 64, 64), num_classes=200).variant
    'tiny'
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    shape = _check_shape(input_shape)
    num_classes = check_width("num_classes", num_classes)
    if variant is not None and name != "alexnet":
        raise ValueError(f"variant applies only to 'alexnet', got variant={variant!r} for {name!r}")

    widths = {"mlp": PAPER_HIDDEN, "mlp-small": SMALL_HIDDEN, **_ZHANG_MLP}
    if name in widths:
        return MLP(math.prod(shape), num_classes, hidden=widths[name], dropout=dropout)
    if dropout:
        raise ValueError(f"dropout is built into the MLPs only, not {name!r}")
    if name in ("alexnet-small", "inception-small"):
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 15:
            raise ValueError(f"{name} needs square images (C, s, s) with s >= 15, got {shape}")
        channels, side = shape[0], shape[1]
        network = SmallAlexNet if name == "alexnet-small" else SmallInception
        return network(channels, num_classes, image_size=side)
    if name == "cnn":
        channels, side = _square_image("cnn", shape, FLATTEN_WIDTH)
        return CNN(channels, num_classes, image_size=side)
    if name == "alexnet":
        _, side = _square_image("alexnet", shape, set(ALEXNET_INPUT_SIZE.values()))
        if shape[0] != 3:
            raise ValueError(f"alexnet needs 3 input channels, got input_shape {shape}")
        by_size = {size: key for key, size in ALEXNET_INPUT_SIZE.items()}
        if variant is None:
            variant = by_size[side]
        elif variant not in ALEXNET_INPUT_SIZE:
            raise ValueError(
                f"AlexNet variant must be one of {sorted(ALEXNET_INPUT_SIZE)}, got {variant!r}"
            )
        elif ALEXNET_INPUT_SIZE[variant] != side:
            raise ValueError(
                f"AlexNet variant {variant!r} is built for {ALEXNET_INPUT_SIZE[variant]} px "
                f"input, but input_shape is {shape}"
            )
        return AlexNet(num_classes, variant=variant)
    if shape != _RESNET_INPUT:
        raise ValueError(f"resnet18 needs input_shape {_RESNET_INPUT}, got {shape}")
    return ResNet18(num_classes)
