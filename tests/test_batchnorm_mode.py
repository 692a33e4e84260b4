"""batchnorm_per_sample: the authors' BatchNorm-train-mode, batch-of-one extraction (SPEC §11.2)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from masc_fast.activations import ActivationTap, resolve_layers
from masc_fast.models import ResNet18, batchnorm_per_sample


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class TinyBNNet(nn.Module):
    """Conv -> BN2d -> ReLU -> conv1d-shaped view -> BN1d (3-d input) -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.bn1d = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3 * 25, 4)

    def forward(self, x):
        h = self.relu(self.bn2d(self.conv(x)))
        h = self.bn1d(h.flatten(2))
        return self.fc(h.flatten(1))


def _randomise_batchnorm(model, seed=7):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + torch.rand(c, generator=g))
                module.weight.copy_(0.5 + torch.rand(c, generator=g))
                module.bias.copy_(torch.randn(c, generator=g))
    return model


def _running_stats(model):
    return {
        name: buffer.clone()
        for name, buffer in model.named_buffers()
        if name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


def _one_at_a_time_in_train_mode(model, x):
    """The authors' extraction: a fresh train-mode copy, one sample per forward."""
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        return torch.cat([reference(x[i : i + 1]) for i in range(len(x))])


def _per_sample_bn_float64(module, h):
    """Hand-written per-sample, per-channel normalisation with the biased variance."""
    dims = tuple(range(2, h.ndim))
    mean = h.mean(dim=dims, keepdim=True)
    var = ((h - mean) ** 2).mean(dim=dims, keepdim=True)
    shape = (1, -1) + (1,) * len(dims)
    weight = module.weight.double().view(shape)
    bias = module.bias.double().view(shape)
    return weight * (h - mean) / torch.sqrt(var + module.eps) + bias


def test_tiny_net_matches_hand_computed_float64():
    model = _randomise_batchnorm(TinyBNNet()).eval()
    x = _randn(4, 2, 5, 5, seed=1)
    with batchnorm_per_sample(model), torch.no_grad():
        got = model(x)
    p = {k: v.double() for k, v in model.state_dict().items()}
    h = nn.functional.conv2d(x.double(), p["conv.weight"], p["conv.bias"], padding=1)
    h = torch.relu(_per_sample_bn_float64(model.bn2d, h))
    h = _per_sample_bn_float64(model.bn1d, h.flatten(2))
    expected = h.flatten(1) @ p["fc.weight"].T + p["fc.bias"]
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    # Not the eval-mode output: the context really changed what BN computes.
    with torch.no_grad():
        assert not torch.allclose(model(x), got, atol=1e-3)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_tiny_net_matches_batch_of_one_train_mode(mode):
    model = _randomise_batchnorm(TinyBNNet())
    model.train(mode == "train")
    x = _randn(4, 2, 5, 5, seed=2)
    expected = _one_at_a_time_in_train_mode(model, x)
    with batchnorm_per_sample(model), torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert model.training == (mode == "train")


def _train_mode_singles(model, x, layers, dtype):
    """Per-layer activations of the authors' extraction (train mode, batch 1) at ``dtype``."""
    reference = copy.deepcopy(model).to(dtype).train()
    with ActivationTap(reference, layers).attached() as tap:
        singles = [tap.forward(x[i : i + 1].to(dtype)) for i in range(len(x))]
    logits = torch.cat([output for output, _ in singles])
    return logits, {name: torch.cat([acts[name] for _, acts in singles]) for name in layers}


def _assert_as_close_as_float32_allows(got, float32_path, float64_path, name):
    # BatchNorm over the 4 positions of a layer4 map divides by a small per-sample standard
    # deviation, so float32 rounding grows to ~1e-4 there on either path. Policy (STYLE habit 9):
    # the batched result may be at most twice as far from the float64 truth as the authors'
    # own float32 batch-of-one path, plus a 1e-5 floor, and never more than 1e-3.
    error = (got.double() - float64_path).abs().max().item()
    own_error = (float32_path.double() - float64_path).abs().max().item()
    assert error <= min(2 * own_error + 1e-5, 1e-3), (name, error, own_error)


def test_resnet18_matches_batch_of_one_train_mode():
    torch.manual_seed(0)
    model = _randomise_batchnorm(ResNet18(10)).eval()
    x = _randn(4, 3, 32, 32, seed=3)
    layers = resolve_layers(model, None)
    logits32, acts32 = _train_mode_singles(model, x, layers, torch.float32)
    logits64, acts64 = _train_mode_singles(model, x, layers, torch.float64)
    before = _running_stats(model)
    with batchnorm_per_sample(model), ActivationTap(model, layers).attached() as tap:
        logits, acts = tap.forward(x)
    _assert_as_close_as_float32_allows(logits, logits32, logits64, "logits")
    for name in layers:
        _assert_as_close_as_float32_allows(acts[name], acts32[name], acts64[name], name)
    # The float64 truth itself differs from eval mode, so the comparison has teeth.
    with torch.no_grad():
        assert not torch.allclose(model(x).double(), logits64, atol=1e-2)
    after = _running_stats(model)
    assert before.keys() == after.keys() and len(before) == 60
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_resnet18_default_init_matches_batch_of_one_logits():
    model = ResNet18(10).train()
    x = _randn(2, 3, 32, 32, seed=4)
    expected = _one_at_a_time_in_train_mode(model, x)
    with batchnorm_per_sample(model), torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_running_stats_unchanged_in_train_mode():
    model = _randomise_batchnorm(TinyBNNet()).train()
    before = _running_stats(model)
    with batchnorm_per_sample(model), torch.no_grad():
        model(_randn(3, 2, 5, 5, seed=5))
    for name, value in _running_stats(model).items():
        assert torch.equal(before[name], value), name


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_behaviour_restored_on_exit(mode):
    model = _randomise_batchnorm(TinyBNNet())
    model.train(mode == "train")
    x = _randn(4, 2, 5, 5, seed=6)
    with torch.no_grad():
        before = model(x)
        with batchnorm_per_sample(model):
            inside = model(x)
        after = model(x)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert not torch.allclose(inside, before, atol=1e-3)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_restored_when_body_raises():
    model = _randomise_batchnorm(TinyBNNet()).eval()
    x = _randn(2, 2, 5, 5, seed=8)
    with torch.no_grad():
        before = model(x)
        with pytest.raises(RuntimeError, match="boom"), batchnorm_per_sample(model):
            raise RuntimeError("boom")
        torch.testing.assert_close(model(x), before, atol=0, rtol=0)


def test_nested_contexts_restore_in_order():
    model = _randomise_batchnorm(TinyBNNet()).eval()
    x = _randn(2, 2, 5, 5, seed=9)
    with torch.no_grad():
        with batchnorm_per_sample(model):
            outer = model(x)
            with batchnorm_per_sample(model):
                torch.testing.assert_close(model(x), outer, atol=0, rtol=0)
            torch.testing.assert_close(model(x), outer, atol=0, rtol=0)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_model_without_batchnorm_unchanged():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    x = _randn(5, 3, seed=10)
    with torch.no_grad(), batchnorm_per_sample(model) as inside:
        assert inside is model
        torch.testing.assert_close(model(x), model[1](model[0](x)))


def test_single_value_per_channel_is_rejected_with_module_name():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match=r"'1'.*shape \(5, 3\)"), batchnorm_per_sample(model):
        model(_randn(5, 4, seed=11))


def test_rejects_non_module():
    with pytest.raises(TypeError, match="torch.nn.Module, got dict"), batchnorm_per_sample({}):
        pass
