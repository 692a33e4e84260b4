"""The paper's models: shapes, probed layer names and widths, the authors' parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from masc_fast.activations import ActivationTap, resolve_layers
from masc_fast.models import (
    CNN,
    INPUT_LAYER,
    MLP,
    MODEL_NAMES,
    AlexNet,
    BasicBlock,
    ResNet18,
    build_model,
)


def _parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_mlp_parameter_count_matches_authors_mnist_model():
    assert _parameter_count(MLP(784, 10)) == 5_433_994


def test_mlp_parameter_count_matches_authors_cifar10_model():
    assert _parameter_count(MLP(3072, 10)) == 5_726_858


def test_mlp_small_is_the_paper_mlp_with_two_hidden_layers_of_512():
    model = build_model("mlp-small", input_shape=(64,), num_classes=10)
    assert list(model.masc_layers) == ["input", "fc1", "fc2"]
    assert _parameter_count(model) == 301_066  # 5,341,834 for the paper's shape on digits
    assert _parameter_count(build_model("mlp", input_shape=(64,), num_classes=10)) == 5_341_834


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


# ---------------------------------------------------------------------------------------------
# CNN, AlexNet, ResNet18 and build_model (SPEC §3.2-3.4)
# ---------------------------------------------------------------------------------------------

RESNET_LAYERS = {
    "l0": "maxpool",
    "l0_1": "layer1.0.relu",
    "l0_2": "layer1.0.relu_1",
    "l0_3": "layer1.1.relu",
    "l1": "layer1.1.relu_1",
    "l2": "layer2.1.relu_1",
    "l3": "layer3.1.relu_1",
    "l4": "layer4.1.relu_1",
    "bf_last": "flatten",
}
RESNET_WIDTHS = {
    "l0": 16384,
    "l0_1": 16384,
    "l0_2": 16384,
    "l0_3": 16384,
    "l1": 16384,
    "l2": 8192,
    "l3": 4096,
    "l4": 2048,
    "bf_last": 512,
}


def _images(batch, shape, seed=0):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _tap(model, x):
    layers = resolve_layers(model, None)
    with ActivationTap(model, layers).attached() as tap:
        return tap.forward(x)


@pytest.mark.parametrize(
    ("channels", "size", "classes", "expected"),
    [(1, 28, 10, 344_042), (3, 32, 10, 456_330)],
    ids=["mnist", "cifar10"],
)
def test_cnn_parameter_count_matches_authors(channels, size, classes, expected):
    assert _parameter_count(CNN(channels, classes, image_size=size)) == expected


@pytest.mark.parametrize(
    ("variant", "classes", "expected"),
    [("cifar100", 100, 20_495_268), ("tiny", 200, 21_123_080)],
)
def test_alexnet_parameter_count_is_forward_used_weights(variant, classes, expected):
    assert _parameter_count(AlexNet(classes, variant=variant)) == expected


def test_alexnet_has_no_dead_classifier():
    names = {name for name, _ in AlexNet(100).named_modules()}
    assert not any("classifier" in name for name in names)
    assert not any(isinstance(m, nn.Dropout) for m in AlexNet(100).modules())


def test_resnet18_parameter_count_matches_authors():
    assert _parameter_count(ResNet18(10)) == 11_173_962


def test_cnn_structure():
    model = CNN(3, 7, image_size=32)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 16),
        (16, 16),
        (16, 32),
        (32, 32),
        (32, 64),
        (64, 64),
    ]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 3
    assert sum(isinstance(m, nn.ReLU) for m in model.features) == 6
    assert [(model.fc1.in_features, model.fc2.in_features, model.fc3.in_features)] == [
        (1024, 250, 250)
    ]
    assert model.out.bias is None and model.out.weight.shape == (7, 250)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_cnn_constructor_does_not_reseed():
    torch.manual_seed(5)
    first = CNN(1)
    second = CNN(1)
    assert not torch.equal(first.fc1.weight, second.fc1.weight)
    torch.manual_seed(5)
    assert torch.equal(CNN(1).fc1.weight, first.fc1.weight)


def _cnn_reference(model, x):
    """Hand-written float64 forward of the CNN from its weights: checks the wiring."""
    p = {k: v.double() for k, v in model.state_dict().items()}
    h = x.double()
    convs = [k[: -len(".weight")] for k in p if k.startswith("features") and k.endswith("weight")]
    for index, key in enumerate(convs):
        h = torch.relu(nn.functional.conv2d(h, p[f"{key}.weight"], p[f"{key}.bias"], padding=1))
        if index % 2 == 1:
            h = nn.functional.max_pool2d(h, 2)
    acts = {"input": x.double().flatten(1), "flatten": h.flatten(1)}
    h = h.flatten(1)
    for i in (1, 2, 3):
        h = torch.relu(h @ p[f"fc{i}.weight"].T + p[f"fc{i}.bias"])
        acts[f"fc{i}"] = h
    return h @ p["out.weight"].T, acts


@pytest.mark.parametrize(("channels", "size", "flat"), [(1, 28, 576), (3, 32, 1024)])
def test_cnn_layers_widths_and_values(channels, size, flat):
    model = CNN(channels, 10, image_size=size)
    assert resolve_layers(model, None) == {
        "input": "input",
        "flatten": "flatten",
        "fc1": "relu1",
        "fc2": "relu2",
        "fc3": "relu3",
    }
    x = _images(3, (channels, size, size))
    logits, acts = _tap(model, x)
    assert logits.shape == (3, 10)
    widths = {name: a.shape[1] for name, a in acts.items()}
    assert widths == {
        "input": channels * size * size,
        "flatten": flat,
        "fc1": 250,
        "fc2": 250,
        "fc3": 250,
    }
    assert bool((acts["flatten"] >= 0).all()) and bool((acts["flatten"] > 0).any())
    ref_logits, ref_acts = _cnn_reference(model, x)
    torch.testing.assert_close(logits.double(), ref_logits, atol=1e-5, rtol=1e-4)
    for name, ref in ref_acts.items():
        torch.testing.assert_close(acts[name].double(), ref, atol=1e-5, rtol=1e-4)


def _alexnet_reference(model, x):
    """Hand-written float64 forward of AlexNet from its weights and the SPEC §3.3 table."""
    p = {k: v.double() for k, v in model.state_dict().items()}
    conv_keys = [
        k[: -len(".weight")] for k in p if k.startswith("features") and k.endswith("weight")
    ]
    first = [(2, 1), (1, 1)] if model.variant == "cifar100" else [(4, 2), (1, 2)]
    geometry = [*first, (1, 1), (1, 1), (1, 1)]
    h = x.double()
    for index, (key, (stride, padding)) in enumerate(zip(conv_keys, geometry)):
        w = p[f"{key}.weight"]
        h = torch.relu(nn.functional.conv2d(h, w, p[f"{key}.bias"], stride, padding))
        if index in (0, 1, 4):
            h = nn.functional.max_pool2d(h, 3, 2)
    acts = {"flatten": h.flatten(1)}
    h = torch.relu(acts["flatten"] @ p["fc1.weight"].T + p["fc1.bias"])
    acts["fc1"] = h
    h = torch.relu(h @ p["fc2.weight"].T + p["fc2.bias"])
    acts["fc2"] = h
    return h @ p["out.weight"].T + p["out.bias"], acts


@pytest.mark.parametrize(
    ("variant", "classes", "size", "kernels"),
    [("cifar100", 100, 32, [3, 3, 3, 3, 3]), ("tiny", 200, 64, [11, 5, 3, 3, 3])],
)
def test_alexnet_layers_widths_and_values(variant, classes, size, kernels):
    model = AlexNet(classes, variant=variant)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == kernels
    assert [c.out_channels for c in convs] == [64, 192, 384, 256, 256]
    assert sum(isinstance(m, nn.ReLU) for m in model.features) == 5
    assert model.input_size == size
    assert resolve_layers(model, None) == {"flatten": "flatten", "fc1": "relu1", "fc2": "relu2"}
    x = _images(2, (3, size, size))
    logits, acts = _tap(model, x)
    assert logits.shape == (2, classes)
    assert {name: a.shape[1] for name, a in acts.items()} == {
        "flatten": 256,
        "fc1": 4096,
        "fc2": 4096,
    }
    assert bool((acts["flatten"] >= 0).all()) and bool((acts["flatten"] > 0).any())
    ref_logits, ref_acts = _alexnet_reference(model, x)
    torch.testing.assert_close(logits.double(), ref_logits, atol=1e-5, rtol=1e-4)
    for name, ref in ref_acts.items():
        torch.testing.assert_close(acts[name].double(), ref, atol=1e-5, rtol=1e-4)


def _bn_eval(h, p, key):
    return nn.functional.batch_norm(
        h, p[f"{key}.running_mean"], p[f"{key}.running_var"], p[f"{key}.weight"], p[f"{key}.bias"]
    )


def _resnet_reference(model, x):
    """Hand-written float64 eval-mode forward of ResNet18 (SPEC §3.4) with its tap points."""
    p = {k: v.double() for k, v in model.state_dict().items()}
    conv = nn.functional.conv2d
    h = torch.relu(_bn_eval(conv(x.double(), p["conv1.weight"], padding=1), p, "bn1"))
    h = nn.functional.max_pool2d(h, 3, 2, padding=1)
    acts = {"l0": h}
    for stage, first_stride in zip((1, 2, 3, 4), (1, 2, 2, 2)):
        for block in (0, 1):
            key = f"layer{stage}.{block}"
            stride = first_stride if block == 0 else 1
            out = conv(h, p[f"{key}.conv1.weight"], stride=stride, padding=1)
            out = torch.relu(_bn_eval(out, p, f"{key}.bn1"))
            acts[f"{key}.relu"] = out
            out = _bn_eval(conv(out, p[f"{key}.conv2.weight"], padding=1), p, f"{key}.bn2")
            if f"{key}.shortcut.0.weight" in p:
                skip = conv(h, p[f"{key}.shortcut.0.weight"], stride=stride)
                skip = _bn_eval(skip, p, f"{key}.shortcut.1")
            else:
                skip = h
            h = torch.relu(out + skip)
            acts[f"{key}.relu_1"] = h
    pooled = h.mean(dim=(2, 3))
    named = {short: acts.get(node, acts.get(short)) for short, node in RESNET_LAYERS.items()}
    named["bf_last"] = pooled
    return pooled @ p["fc.weight"].T + p["fc.bias"], {k: v.flatten(1) for k, v in named.items()}


def _randomise_batchnorm(model, seed=3):
    """Non-trivial BN statistics and affine parameters, so a misplaced BN shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + torch.rand(c, generator=g))
                module.weight.copy_(0.5 + torch.rand(c, generator=g))
                module.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model


def test_resnet18_structure():
    model = ResNet18(10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.bias is None
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    assert isinstance(model.flatten, nn.Flatten)
    for stage, (width, stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2)), start=1):
        blocks = list(getattr(model, f"layer{stage}"))
        assert len(blocks) == 2 and all(isinstance(b, BasicBlock) for b in blocks)
        assert blocks[0].conv1.stride == (stride, stride)
        assert blocks[0].conv2.out_channels == width
        has_projection = isinstance(blocks[0].shortcut, nn.Sequential)
        assert has_projection == (stage > 1)
        assert isinstance(blocks[1].shortcut, nn.Identity)
        for block in blocks:
            assert block.relu is not block.relu_1
    assert (model.fc.in_features, model.fc.out_features) == (512, 10)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bn) == 20 and all(m.eps == 1e-5 and m.momentum == 0.1 for m in bn)


def test_resnet18_layers_widths_and_values():
    model = _randomise_batchnorm(ResNet18(10)).eval()
    assert resolve_layers(model, None) == RESNET_LAYERS
    x = _images(2, (3, 32, 32))
    logits, acts = _tap(model, x)
    assert logits.shape == (2, 10)
    assert {name: a.shape[1] for name, a in acts.items()} == RESNET_WIDTHS
    # The captured values equal a hook-free float64 recomputation: every probed module ran
    # once and nothing later overwrote its output.
    ref_logits, ref_acts = _resnet_reference(model, x)
    torch.testing.assert_close(logits.double(), ref_logits, atol=1e-4, rtol=1e-4)
    for name, ref in ref_acts.items():
        torch.testing.assert_close(acts[name].double(), ref, atol=1e-4, rtol=1e-4, msg=name)
    assert all(bool((a >= 0).all()) for a in acts.values())


def test_resnet18_train_mode_forward_shape():
    model = ResNet18(7).train()
    assert model(_images(2, (3, 32, 32))).shape == (2, 7)


@pytest.mark.parametrize(
    ("name", "shape", "classes", "kind", "check"),
    [
        ("mlp", (1, 28, 28), 10, MLP, lambda m: m.in_features == 784),
        ("mlp", (3, 32, 32), 10, MLP, lambda m: m.in_features == 3072),
        ("mlp", (64,), 10, MLP, lambda m: m.in_features == 64),
        ("mlp", (40,), 10, MLP, lambda m: m.in_features == 40),
        ("cnn", (1, 28, 28), 10, CNN, lambda m: (m.in_channels, m.image_size) == (1, 28)),
        ("cnn", (3, 32, 32), 10, CNN, lambda m: (m.in_channels, m.image_size) == (3, 32)),
        ("alexnet", (3, 32, 32), 100, AlexNet, lambda m: m.variant == "cifar100"),
        ("alexnet", (3, 64, 64), 200, AlexNet, lambda m: m.variant == "tiny"),
        ("resnet18", (3, 32, 32), 10, ResNet18, lambda m: m.num_classes == 10),
        ("mlp-small", (64,), 10, MLP, lambda m: m.hidden == (512, 512)),
    ],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_build_model_dispatch(name, shape, classes, kind, check):
    model = build_model(name, input_shape=shape, num_classes=classes)
    assert type(model) is kind and check(model)
    if name != "resnet18":
        assert model(_images(2, shape)).shape == (2, classes)


@pytest.mark.parametrize("shape", [[1, 28, 28], torch.Size([1, 28, 28]), np.array([1, 28, 28])])
def test_build_model_accepts_shape_like_sequences(shape):
    model = build_model("cnn", input_shape=shape, num_classes=10)
    assert (model.in_channels, model.image_size) == (1, 28)


def test_build_model_explicit_alexnet_variant():
    model = build_model("alexnet", input_shape=[3, 64, 64], num_classes=5, variant="tiny")
    assert model.variant == "tiny" and model.out.out_features == 5


def test_model_names():
    paper = ("mlp", "cnn", "alexnet", "resnet18", "mlp-small")
    zhang = ("mlp-1x512", "mlp-3x512", "alexnet-small", "inception-small")
    assert MODEL_NAMES == paper + zhang
    assert INPUT_LAYER == "input"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "vgg", "input_shape": (3, 32, 32)}, ValueError, "mlp, cnn, alexnet, resnet18"),
        ({"name": "cnn", "input_shape": (1, 30, 30)}, ValueError, r"cnn .*\(1, 30, 30\)"),
        ({"name": "cnn", "input_shape": (1, 28, 32)}, ValueError, r"\(1, 28, 32\)"),
        ({"name": "cnn", "input_shape": (784,)}, ValueError, r"cnn .*\(784,\)"),
        ({"name": "alexnet", "input_shape": (3, 28, 28)}, ValueError, r"alexnet.*\(3, 28, 28\)"),
        ({"name": "alexnet", "input_shape": (1, 32, 32)}, ValueError, "3 input channels"),
        (
            {"name": "alexnet", "input_shape": (3, 32, 32), "variant": "tiny"},
            ValueError,
            "'tiny' is built for 64 px",
        ),
        (
            {"name": "alexnet", "input_shape": (3, 32, 32), "variant": "imagenet"},
            ValueError,
            "variant must be one of",
        ),
        (
            {"name": "cnn", "input_shape": (1, 28, 28), "variant": "tiny"},
            ValueError,
            "only to 'alexnet'",
        ),
        ({"name": "resnet18", "input_shape": (3, 64, 64)}, ValueError, r"resnet18.*\(3, 64, 64\)"),
        ({"name": "mlp", "input_shape": (0, 4)}, ValueError, "positive integers"),
        ({"name": "mlp", "input_shape": ()}, ValueError, "non-empty"),
        ({"name": "mlp", "input_shape": 784}, TypeError, "input_shape must be a sequence"),
        ({"name": "mlp", "input_shape": (4,), "num_classes": 0}, ValueError, "num_classes"),
    ],
)
def test_build_model_errors(kwargs, error, match):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(error, match=match):
        build_model(**kwargs)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: CNN(1, 10, image_size=64), ValueError, r"image_size must be one of \[28, 32\]"),
        (lambda: CNN(0), ValueError, "in_channels must be at least 1"),
        (lambda: CNN(1, 2.5), TypeError, "num_classes must be an integer"),
        (lambda: AlexNet(100, variant="imagenet"), ValueError, "'imagenet'"),
        (lambda: AlexNet(0), ValueError, "num_classes must be at least 1"),
        (lambda: ResNet18(0), ValueError, "num_classes must be at least 1"),
    ],
)
def test_model_constructors_reject_bad_arguments(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        # Zhang et al. quote ≈1.21 M, ≈1.74 M, ≈1.38 M and ≈1.65 M on 28×28×3 crops.
        ("mlp-1x512", (3, 28, 28), 1_209_866),
        ("mlp-3x512", (3, 28, 28), 1_735_178),
        ("alexnet-small", (3, 28, 28), 1_387_786),
        ("inception-small", (3, 28, 28), 1_652_826),
        ("alexnet-small", (3, 32, 32), 1_756_426),
        ("inception-small", (3, 32, 32), 1_652_826),
        ("alexnet-small", (1, 28, 28), 1_384_586),
        ("inception-small", (1, 28, 28), 1_651_098),
    ],
)
def test_zhang_networks_parameter_counts(name, shape, expected):
    model = build_model(name, input_shape=shape, num_classes=10)
    assert _parameter_count(model) == expected
    model.eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("name", ["alexnet-small", "inception-small", "mlp-1x512", "mlp-3x512"])
def test_zhang_networks_masc_layers_are_modules_with_the_stated_widths(name):
    model = build_model(name, input_shape=(3, 32, 32), num_classes=10).eval()
    tap = ActivationTap(model, resolve_layers(model, None))
    with tap.attached():
        _, captured = tap.forward(torch.rand(3, 3, 32, 32))
    widths = {layer: rows.shape[1] for layer, rows in captured.items()}
    expected = {
        "alexnet-small": {"input": 3072, "flatten": 4096, "fc1": 384, "fc2": 192},
        "inception-small": {"input": 3072, "pool": 336},
        "mlp-1x512": {"input": 3072, "fc1": 512},
        "mlp-3x512": {"input": 3072, "fc1": 512, "fc2": 512, "fc3": 512},
    }[name]
    assert widths == expected
    for layer, rows in captured.items():
        if layer in ("fc1", "fc2", "fc3"):
            assert bool((rows >= 0).all())  # after the ReLU


def test_zhang_conv_networks_refuse_images_they_cannot_take():
    with pytest.raises(ValueError, match=r"inception-small needs square images \(C, s, s\)"):
        build_model("inception-small", input_shape=(64,), num_classes=10)
    with pytest.raises(ValueError, match="s >= 15"):
        build_model("alexnet-small", input_shape=(1, 8, 8), num_classes=10)
