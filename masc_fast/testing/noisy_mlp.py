"""An MLP trained with shuffled labels, and its activations at every probed layer.

What the reference-agreement tests and the precision benchmark probe: real activations of a
network that has (partly) memorised label noise, on an offline dataset, in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from masc_fast.activations import ActivationTap, resolve_layers
from masc_fast.data.corruption import corrupt_labels
from masc_fast.data.in_memory import labelled_loader
from masc_fast.models import MLP
from masc_fast.pipeline.runs.training import make_optimizer, train_until

__all__ = ["NoisyActivations", "noisy_mlp_activations"]


@dataclass(frozen=True)
class NoisyActivations:
    """Per-layer activations (layer → (n, d) tensor) of the train and test rows, and labels."""

    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    corrupted: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor


def noisy_mlp_activations(
    data, p: float, hidden, *, epochs: int, num_classes: int = 10, seed: int = 0
) -> NoisyActivations:
    """Train ``MLP(hidden)`` on ``data`` = (x_train, y_train, x_test, y_test) with a fraction
    ``p`` of the training labels shuffled (the paper's recipe), SGD lr 0.01, batches of 32,
    for ``epochs`` epochs; return its activations at every probed layer (eval mode)."""
    x_train, y_train, x_test, y_test = data
    corrupted = torch.as_tensor(corrupt_labels(y_train.numpy(), p, num_classes))
    torch.manual_seed(seed)
    model = MLP(x_train.shape[1], num_classes, hidden=hidden)
    train_until(
        model,
        labelled_loader(x_train, corrupted, batch_size=32, shuffle=True),
        optimizer=make_optimizer("sgd", model.parameters(), 0.01),
        max_epochs=epochs,
        progress=False,
    )
    tap = ActivationTap(model.eval(), resolve_layers(model, None))
    with tap.attached():
        _, train = tap.forward(x_train)
        _, test = tap.forward(x_test)
    return NoisyActivations(train, test, corrupted, y_train, y_test)
