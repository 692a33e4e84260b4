"""The MLP: shapes, probed layer names, and the authors' parameter count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from masc_fast.models import MLP


def _parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_mlp_parameter_count_matches_authors_mnist_model():
    assert _parameter_count(MLP(784, 10)) == 5_433_994


def test_mlp_parameter_count_matches_authors_cifar10_model():
    assert _parameter_count(MLP(3072, 10)) == 5_726_858


@pytest.mark.parametrize("input_shape", [(64,), (8, 8), (1, 8, 8)])
def test_mlp_flattens_and_returns_logits(input_shape):
    model = MLP(64, 10)
    logits = model(torch.randn(5, *input_shape, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (5, 10)
    assert logits.dtype == torch.float32


def test_mlp_layer_structure():
    model = MLP(40, 7, hidden=(16, 32, 8))
    modules = dict(model.named_children())
    assert list(modules) == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "out"]
    assert isinstance(model.flatten, nn.Flatten)
    assert [(model.fc1.in_features, model.fc1.out_features)] == [(40, 16)]
    assert (model.out.in_features, model.out.out_features) == (8, 7)
    assert all(isinstance(modules[f"relu{i}"], nn.ReLU) for i in (1, 2, 3))


def test_mlp_masc_layers_default():
    assert MLP(784, 10).masc_layers == {
        "input": "input",
        "fc1": "relu1",
        "fc2": "relu2",
        "fc3": "relu3",
        "fc4": "relu4",
    }


@pytest.mark.parametrize("hidden", [(), (32,), (16, 32, 64, 128, 256)])
def test_mlp_masc_layers_exist_in_named_modules(hidden):
    model = MLP(12, 3, hidden=hidden)
    names = dict(model.named_modules())
    layers = model.masc_layers
    assert list(layers)[0] == "input" and layers["input"] == "input"
    assert len(layers) == len(hidden) + 1
    for display, module_name in layers.items():
        if display != "input":
            assert isinstance(names[module_name], nn.ReLU), display


def test_mlp_masc_layer_outputs_are_post_relu():
    model = MLP(10, 4, hidden=(6, 5))
    seen = {}
    for display, module_name in model.masc_layers.items():
        if display != "input":
            module = dict(model.named_modules())[module_name]
            module.register_forward_hook(lambda _m, _i, out, d=display: seen.setdefault(d, out))
    model(torch.randn(9, 10, generator=torch.Generator().manual_seed(1)))
    assert seen["fc1"].shape == (9, 6) and seen["fc2"].shape == (9, 5)
    assert all(bool((out >= 0).all()) for out in seen.values())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_features": 0, "num_classes": 10}, ValueError, "in_features must be at least 1"),
        ({"in_features": 4, "num_classes": 0}, ValueError, "num_classes must be at least 1"),
        ({"in_features": 4, "num_classes": 2, "hidden": (8, 0)}, ValueError, r"hidden\[1\]"),
        ({"in_features": 4.0, "num_classes": 2}, TypeError, "in_features must be an integer"),
    ],
)
def test_mlp_rejects_bad_widths(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)
